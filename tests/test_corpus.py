"""Corpus sources and window packing."""

import pytest

from nxkit.collection.corpus import CorpusError, load_documents, make_windows, pydoc_documents


class CharTokenizer:
    """One token per character; enough to test packing without a model."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_pydoc_is_always_there():
    docs = pydoc_documents()
    assert len(docs) > 50
    assert any("for" in d for d in docs)


def test_windows_are_deterministic_and_counted():
    docs = [f"document number {i} " * 3 for i in range(40)]
    a = make_windows(CharTokenizer(), documents=docs, window=16, seed=3)
    b = make_windows(CharTokenizer(), documents=docs, window=16, seed=3)
    c = make_windows(CharTokenizer(), documents=docs, window=16, seed=4)
    assert (a.tokens == b.tokens).all()
    assert not (a.tokens == c.tokens).all()
    total = sum(len(d) + 1 for d in docs)  # each document plus its end-of-text token
    assert a.n_windows == total // 16
    assert a.n_tokens == a.n_windows * 16
    assert a.n_documents == 40
    assert "windows of 16 tokens" in a.summary()


def test_token_budget_is_respected():
    docs = ["abcdefghij" * 10 for _ in range(100)]
    w = make_windows(CharTokenizer(), documents=docs, window=8, max_tokens=100, seed=0)
    assert w.n_tokens == 96
    assert w.n_documents < 100


def test_local_files(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("first doc\n\nsecond doc\n")
    assert load_documents(str(txt)) == ["first doc", "second doc"]
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert load_documents(str(jl)) == ["one", "two"]
    jl.write_text('{"body": "one"}\n')
    with pytest.raises(CorpusError, match="'text' field"):
        load_documents(str(jl))


def test_bad_input_errors(tmp_path):
    with pytest.raises(CorpusError, match="unknown corpus 'nope'"):
        load_documents("nope")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(CorpusError, match="holds no text"):
        load_documents(str(empty))
    with pytest.raises(CorpusError, match="does not exist"):
        load_documents(str(tmp_path / "missing.txt"))
    with pytest.raises(CorpusError, match="fewer than one window"):
        make_windows(CharTokenizer(), documents=["short"], window=64)
    with pytest.raises(CorpusError, match="empty"):
        make_windows(CharTokenizer(), documents=["  "], window=4)


def test_hub_dataset_offline_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusError, match="reachable hub"):
        load_documents("hf:this-dataset/does-not-exist")
