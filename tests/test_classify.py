"""Detection and fuzzing: their arithmetic, prompts and parsing (a scripted answer), and a run with them against the
loopback server; one real pass of each through llama.cpp's server is in test_server.py."""

from __future__ import annotations

import pytest
from conftest import ScriptedLLM

from nxkit import prompts
from nxkit.llm.base import run_sync
from nxkit.records import HeldOutWindow
from nxkit.scorers.classify import classification_scores, classify, detection_items, fuzzing_items


def test_classification_scores():
    values, flag = classification_scores([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0])
    assert flag is None and values["accuracy"] == pytest.approx(4 / 6)
    assert values["balanced_accuracy"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert values["auc"] == pytest.approx(((1 * 3 + 0.5 * 1) + (0 * 0 + 0.5 * 3)) / 8)  # ties count half
    assert classification_scores([1, 0], [0.9, 0.2])[0]["auc"] == 1.0
    assert classification_scores([1, 1], [1, 0]) == (
        {"accuracy": 0.5, "balanced_accuracy": None, "auc": None},
        "one_class",
    )
    assert classification_scores([], [])[1] == "empty"


def test_marking_and_parsing_answers():
    assert prompts.mark_tokens(["The", " cat", " sat", "\n", " on"], [False, True, True, False, True]) == (
        "The <<cat sat>>  <<on>>"
    )
    text = "1: 1\n2. 0\nsomething else\n3 1\n9: 1\n2: 1"
    said = prompts.parse_label_positions(text, 4)
    assert [label for label, _ in said] == [1, 0, 1, None]
    assert [text[o] if o is not None else None for _, o in said] == ["1", "0", "1", None]  # where each digit is
    # a bare "10" or "11" line is item 10 or 11 with no answer, never item 1 answered 0 or 1
    assert prompts.parse_label_positions("10\n11\n1: 1", 12)[0] == (1, 9)
    assert [label for label, _ in prompts.parse_label_positions("10\n11", 12)] == [None] * 12
    assert [label for label, _ in prompts.parse_label_positions("10: 1\n11 0", 12)][9:11] == [1, 0]
    messages = prompts.detection_messages("numbers", ["a 1", "b"])
    assert messages[-1]["content"] == "Explanation: numbers\nTexts:\n1. a 1\n2. b"
    assert messages[2]["content"] == "1: 1\n2: 0\n3: 1" and "fires" in messages[0]["content"]
    assert "<<" in prompts.fuzzing_messages("numbers", ["a <<1>>"])[1]["content"]


WINDOWS = [
    HeldOutWindow([" a", " 7", " b", " c"], [0.0, 2.0, 0.1, 0.0], split="top"),
    HeldOutWindow([" x", " 3", " y", " z"], [0.0, 1.8, 0.0, 0.0], split="top"),
    HeldOutWindow([" p", " q", " r", " s"], [0.0, 0.1, 0.0, 0.0], split="random"),
    HeldOutWindow([" t", " u", " v", " w"], [0.0, 0.0, 0.0, 0.0], split="random"),
]


def test_items_carry_the_right_answers_and_are_seeded():
    det = detection_items(WINDOWS, 2.0, seed=1)
    assert sorted(det) == sorted([(" a 7 b c", 1), (" x 3 y z", 1), (" p q r s", 0), (" t u v w", 0)])
    assert det == detection_items(WINDOWS, 2.0, seed=1)
    fuzz = fuzzing_items(WINDOWS, 2.0, seed=1)
    assert (" a <<7>> b c", 1) in fuzz and (" x <<3>> y z", 1) in fuzz and len(fuzz) == 4  # random windows: none
    wrong = [t for t, label in fuzz if label == 0]
    assert all(t.count("<<") == 1 and "<<7>>" not in t and "<<3>>" not in t for t in wrong)


def test_a_partial_answer_is_recorded_never_scored_as_wrong():
    items = detection_items(WINDOWS, 2.0, seed=0)
    right = {i + 1: label for i, (_, label) in enumerate(items)}
    answer = "\n".join(f"{i}: {right[i]}" for i in (1, 2, 3))  # the fourth text is not answered
    score, failures = run_sync(classify("detection", ScriptedLLM(answer), "numbers", WINDOWS, 2.0, seed=0))
    assert score.n_items == 4 and score.n_failed == 1 and score.accuracy == 1.0
    assert failures and failures[0].stage == "detection" and failures[0].raw == answer
    none, why = run_sync(classify("fuzzing", None, "numbers", WINDOWS, 2.0, seed=0))
    assert none.flag == "no_llm" and none.auc is None and "needs an LLM" in why[0].reason


def test_a_run_with_detection_and_fuzzing_against_the_loopback_server(tiny_collection, tmp_path):
    from nxkit.explain_score import explain_and_score
    from nxkit.explainers.base import ExplainConfig
    from nxkit.llm.loopback import MODEL, LoopbackServer
    from nxkit.llm.server import OpenAIBackend
    from nxkit.records import NeuronId
    from nxkit.runs import Run
    from nxkit.simulators import make_simulator
    from nxkit.simulators.prompted import SimulateConfig
    from nxkit.views.report import render_report, summary_table

    run = Run(tmp_path / "scorers")
    run.path.mkdir()
    (run.path / "activations").symlink_to(tiny_collection, target_is_directory=True)
    neurons = [NeuronId(5, n) for n in range(6)]
    config = ExplainConfig(
        best_of=2, calibration_windows=2, valid_windows=2, sim_window_tokens=16,
        scorers=["simulation", "detection", "fuzzing"],
    )  # fmt: skip
    with LoopbackServer(latency=0.0) as server:
        backend = OpenAIBackend(MODEL, base_url=server.base_url, api_key="local", cache=False, prompt_logprobs=False)
        sim = make_simulator(backend, SimulateConfig(mode="chat_text"))
        explain_and_score(run, neurons, backend, sim, config, progress=False)
    done = run.summaries(("done",))
    assert done
    for s in done:
        assert s.detection.scorer == "detection" and s.detection.n_items == 4 and s.detection.n_failed == 0
        assert s.fuzzing.n_items % 2 == 0 and s.fuzzing.n_failed == 0
        assert s.detection.accuracy is not None and 0 <= s.detection.accuracy <= 1
    table = run.table()
    assert table["detection_accuracy"].notna().sum() == len(done)
    assert "detection: mean balanced accuracy" in summary_table(run)
    page = render_report(run)
    assert "detection bal. acc." in page and "detection AUC" not in page
    assert all(s.detection.auc is None for s in done)  # 0/1 answers rank nothing: no AUC, and it says why
    graded = [s for s in done if s.detection.balanced_accuracy is not None]
    assert graded and all(s.detection.auc_flag == "binary_answers" for s in graded)
    assert "detection: mean balanced accuracy" in summary_table(
        run
    ) and "(no AUC: the answers are 0/1)" in summary_table(run)


def test_a_graded_answer_gives_an_auc_and_a_binary_one_none():
    import math

    from nxkit.llm.base import TokenLogprob

    items = detection_items(WINDOWS, 2.0, seed=0)
    labels = [label for _, label in items]
    # every answer says 1 (accuracy 0.5), but how sure it is ranks the windows that fire first: a perfect AUC
    answer = "\n".join(f"{i + 1}: 1" for i in range(4))
    sure = {1: 0.9, 0: 0.6}
    tokens = []
    for i in range(4):
        p = sure[labels[i]]
        tokens += [TokenLogprob(f"{i + 1}", -0.1), TokenLogprob(":", -0.1), TokenLogprob(" ", -0.1),
                   TokenLogprob("1", math.log(p), {"1": math.log(p), "0": math.log(1 - p)})]  # fmt: skip
        if i < 3:
            tokens.append(TokenLogprob("\n", -0.1))
    assert "".join(t.token for t in tokens) == answer
    graded, _ = run_sync(classify("detection", ScriptedLLM(answer, tokens=tokens), "numbers", WINDOWS, 2.0, seed=0))
    assert graded.accuracy == 0.5 and graded.auc == 1.0 and graded.auc_flag is None
    binary, _ = run_sync(classify("detection", ScriptedLLM(answer), "numbers", WINDOWS, 2.0, seed=0))
    assert binary.accuracy == 0.5 and binary.auc is None  # one class answered: no AUC either way
    mixed = "\n".join(f"{i + 1}: {label}" for i, label in enumerate(labels))
    plain, _ = run_sync(classify("detection", ScriptedLLM(mixed), "numbers", WINDOWS, 2.0, seed=0))
    assert plain.balanced_accuracy == 1.0 and plain.auc is None and plain.auc_flag == "binary_answers"
