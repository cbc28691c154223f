"""Prompt builders pinned by exact strings, and the parsers of LLM answers."""

from __future__ import annotations

from pathlib import Path

from nxkit import prompts

SIMULATE_PREFIX_PLANTS = (
    "A language model has neurons that each give every token of a text an activation from 0 (silent) to 9 "
    "(strongest). Below, each neuron has a short description, followed by a text with one token per line: the "
    "token, a tab, and the neuron's activation on it.\n\n"
    "Neuron 1\nDescription: it fires on names of weekdays.\n<start>\n"
    "The\t0\n market\t0\n opens\t0\n on\t0\n Saturday\t9\n mornings\t2\n,\t0\n but\t0\n last\t0\n week\t1\n"
    " it\t0\n moved\t0\n to\t0\n Thursday\t9\n because\t0\n of\t0\n the\t0\n rain\t0\n on\t0\n Friday\t8\n"
    " and\t0\n the\t0\n holiday\t1\n on\t0\n Monday\t9\n.\t0\n\\n\t0\n<end>\n\n"
    "Neuron 2\nDescription: it fires on closing brackets in code.\n<start>\n"
    "if\t0\n len\t0\n(\t0\nitems\t0\n)\t8\n >\t0\n max\t0\n(\t0\nsizes\t0\n)\t7\n:\t0\n\\n\t0\n   \t0\n"
    " return\t0\n sorted\t0\n(\t0\nitems\t0\n,\t0\n key\t0\n=\t0\nlen\t0\n)[\t5\n0\t0\n]\t9\n\\n\t0\n<end>\n\n"
    "Neuron 3\nDescription: it fires on words that negate a statement.\n<start>\n"
    "I\t0\n do\t0\n not\t9\n think\t1\n she\t0\n can\t0\n't\t8\n come\t0\n,\t0\n and\t0\n nobody\t7\n will\t0\n"
    " ever\t2\n know\t0\n why\t0\n it\t0\n never\t9\n worked\t0\n.\t0\n No\t6\n one\t1\n asked\t0\n.\t0\n<end>\n\n"
    "Neuron 4\nDescription: it fires on plants.\n<start>\n"
)


def test_simulate_prefix_exact():
    assert prompts.simulate_prefix("plants") == SIMULATE_PREFIX_PLANTS


def test_simulate_window_text_exact_with_placeholder_offsets():
    text, offsets = prompts.simulate_window_text([" a", "\t", "b"])
    assert text == " a\t?\n\\t\t?\nb\t?\n<end>\n"
    assert offsets == [3, 8, 12]
    assert all(text[o] == prompts.PLACEHOLDER for o in offsets)


def test_explain_messages_exact():
    messages = prompts.explain_messages([[(" cat", 10), ("\n", 0), (" dog", 3)]])
    assert messages[0] == {
        "role": "system",
        "content": (
            "You study single neurons inside a language model. You are shown text windows in which one neuron "
            "fired. Each line holds a token, a tab, and the neuron's activation on that token, from 0 (silent) "
            "to 10 (strongest). Work out what the strongly activating tokens have in common and describe it in "
            'one short sentence that begins "It fires on". Describe the pattern; do not list tokens one by one.'
        ),
    }
    assert messages[1]["content"] == (
        "<window 1>\nWe\t0\n met\t0\n on\t0\n Monday\t10\n and\t0\n again\t0\n on\t1\n Friday\t9\n.\t0\n</window>"
        "\n\nWhat does this neuron respond to?"
    )
    assert messages[2] == {"role": "assistant", "content": "It fires on names of weekdays."}
    assert messages[3]["content"] == (
        "<window 1>\nprint\t0\n(\t0\nlen\t0\n(\t0\nx\t0\n))\t10\n #\t0\n size\t0\n</window>\n"
        "Non-zero activations in window 1:\n))\t10\n\n"
        "<window 2>\nf\t0\n(\t0\na\t0\n,\t0\n g\t0\n(\t0\nb\t0\n)\t7\n)\t8\n\\n\t0\n</window>\n\n"
        "What does this neuron respond to?"
    )
    assert messages[4] == {"role": "assistant", "content": "It fires on closing brackets in code."}
    assert messages[5] == {
        "role": "user",
        "content": "<window 1>\n cat\t10\n\\n\t0\n dog\t3\n</window>\n\nWhat does this neuron respond to?",
    }
    assert len(messages) == 6


def test_sparse_window_repeats_nonzero_pairs():
    window = [(" a", 0)] * 9 + [(" b", 7)]
    text = prompts.format_explain_windows([window])
    assert text.endswith("</window>\nNon-zero activations in window 1:\n b\t7")
    dense = [(" a", 1)] * 5 + [(" b", 0)] * 5
    assert "Non-zero" not in prompts.format_explain_windows([dense])


def test_simulate_messages_exact():
    messages = prompts.simulate_messages("plants", [" tree", "\n"])
    assert messages[0]["content"] == (
        "You predict how one neuron of a language model responds to text. The neuron gives every token an "
        "activation from 0 (silent) to 9 (strongest). You get a description of the neuron and a text split into "
        "tokens, one per line. Copy every token line in order and add a tab and the activation, one digit. "
        "Write nothing else."
    )
    assert messages[1]["content"].startswith("Description: it fires on names of weekdays.\nTokens:\nThe\n market\n")
    assert messages[2]["content"].startswith("The\t0\n market\t0\n opens\t0\n on\t0\n Saturday\t9\n")
    assert messages[-1] == {"role": "user", "content": "Description: it fires on plants.\nTokens:\n tree\n\\n"}
    assert len(messages) == 1 + 2 * len(prompts.SIMULATE_EXAMPLES) + 1


def test_every_prompt_the_kit_sends_is_built_in_prompts():
    """No module but prompts.py holds prompt wording, and prompts.py holds no prompt nothing sends (every module of
    every subpackage is read)."""
    import re

    import nxkit

    root = Path(nxkit.__file__).parent
    modules = [p for p in sorted(root.rglob("*.py")) if p.name != "prompts.py"]
    assert len(modules) > 40 and any(p.parent != root for p in modules)  # the subpackages are read too
    for path in modules:
        assert not re.search(r"\b[A-Z_]*(SYSTEM|EXAMPLES?)\s*=", path.read_text()), path
    sources = "".join(p.read_text() for p in modules)
    builders = [n for n, f in vars(prompts).items() if n.endswith("_messages") and callable(f)]
    assert sorted(builders) == [
        "detection_messages", "explain_messages", "fuzzing_messages", "proposal_messages", "revision_messages",
        "simulate_messages",
    ]  # fmt: skip
    for name in [*builders, "simulate_prefix", "simulate_window_text", "parse_proposals", "parse_explanation",
                 "parse_label_positions", "mark_tokens"]:  # fmt: skip
        assert f"prompts.{name}(" in sources, f"prompts.{name} is never sent"


def test_parse_explanation():
    assert prompts.parse_explanation("It fires on names of weekdays.") == "names of weekdays"
    assert (
        prompts.parse_explanation("  Explanation: This neuron responds to plural nouns. It also ...") == "plural nouns"
    )
    assert prompts.parse_explanation('"the word not"\nmore text') == "the word not"
    assert prompts.parse_explanation("") is None
    assert prompts.parse_explanation("   \n  ") is None
    assert prompts.parse_explanation("cat\t10") is None
    assert prompts.parse_explanation("It fires on 'a', 'b', 'c', 'd' and 'e'") is None
    assert prompts.parse_explanation("word " * 50) is None


def test_parse_and_align_simulation_lines():
    text = "Sure!\n the\t3\n cat 7\nnot a line\n\\n\t0\n"
    lines = prompts.parse_simulation_lines(text)
    assert [(ln.token, ln.digit) for ln in lines] == [(" the", 3), (" cat", 7), ("\\n", 0)]
    assert all(text[ln.digit_offset] == str(ln.digit) for ln in lines)
    aligned = prompts.align_lines([" the", " cat", "\n"], lines)
    assert [ln.digit for ln in aligned] == [3, 7, 0]
    # a skipped token is found missing by text, not filled in
    partial = prompts.align_lines([" the", " dog", " cat", "\n"], lines)
    assert [None if ln is None else ln.digit for ln in partial] == [3, None, 7, 0]


def test_crop_window_keeps_peak():
    tokens = [str(i) for i in range(20)]
    acts = [0.0] * 20
    acts[15] = 5.0
    t, a = prompts.crop_window(tokens, acts, 8)
    assert len(t) == 8 and "15" in t and max(a) == 5.0
    assert prompts.crop_window(tokens, acts, None) == (tokens, acts)


def test_parse_numbered_lines():
    text = 'Here you go:\n1. "The cat sat."\n2) Dogs bark\nnot numbered\n3.   \n'
    assert prompts.parse_numbered_lines(text) == ["The cat sat.", "Dogs bark"]
