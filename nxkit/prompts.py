"""Every prompt nxkit sends, built by pure functions, and the parsers of the answers.

Wording and few-shot examples are our own. The explainer sees activations on a 0-10 scale (the
release's normalisation); the simulator answers with one digit, 0-9, because a single digit is one
token in every common tokenizer while "10" is two in many (SmolLM2's included). Scores are
correlations, so the scale of the prediction does not change them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import Mismatch

SIM_MAX = 9
"""Largest activation the simulator writes (one digit)."""
PLACEHOLDER = "?"
"""Stands in for each unknown activation in the all-at-once prompt."""
SPARSE_FRACTION = 0.2
"""A window with fewer non-zero activations than this fraction also gets its non-zero pairs listed."""
ANSWER_LEAD = "It fires on"

Window = list[tuple[str, int]]
"""One text window as (token, activation) pairs."""


def format_token(token: str) -> str:
    """A token as it appears on a prompt line: newlines, tabs and carriage returns escaped."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _token_lines(pairs: list[tuple[str, int]]) -> list[str]:
    return [f"{format_token(t)}\t{a}" for t, a in pairs]


def crop_start(activations: list[float], n: int | None) -> int:
    """Where `crop_window` starts keeping (0 when it keeps everything)."""
    if n is None or len(activations) <= n:
        return 0
    peak = max(range(len(activations)), key=lambda i: activations[i])
    return min(max(0, peak - (n - n // 4) + 1), len(activations) - n)


def crop_window(tokens: list[str], activations: list[float], n: int | None) -> tuple[list[str], list[float]]:
    """Keep `n` consecutive tokens around the strongest activation (most of them before it)."""
    if n is None or len(tokens) <= n:
        return tokens, activations
    start = crop_start(activations, n)
    return tokens[start : start + n], activations[start : start + n]


# --- our own few-shot examples ----------------------------------------------------------------

_BRACKETS_B: Window = [
    ("f", 0),
    ("(", 0),
    ("a", 0),
    (",", 0),
    (" g", 0),
    ("(", 0),
    ("b", 0),
    (")", 7),
    (")", 8),
    ("\n", 0),
]

EXPLAIN_EXAMPLES: list[tuple[list[Window], str]] = [
    (
        [
            [
                ("We", 0),
                (" met", 0),
                (" on", 0),
                (" Monday", 10),
                (" and", 0),
                (" again", 0),
                (" on", 1),
                (" Friday", 9),
                (".", 0),
            ]
        ],
        "names of weekdays",
    ),
    (
        [[("print", 0), ("(", 0), ("len", 0), ("(", 0), ("x", 0), ("))", 10), (" #", 0), (" size", 0)], _BRACKETS_B],
        "closing brackets in code",
    ),
]
"""(windows on the 0-10 scale, explanation) pairs shown to the explainer."""

_MARKET: Window = [
    ("The", 0),
    (" market", 0),
    (" opens", 0),
    (" on", 0),
    (" Saturday", 9),
    (" mornings", 2),
    (",", 0),
    (" but", 0),
    (" last", 0),
    (" week", 1),
    (" it", 0),
    (" moved", 0),
    (" to", 0),
    (" Thursday", 9),
    (" because", 0),
    (" of", 0),
    (" the", 0),
    (" rain", 0),
    (" on", 0),
    (" Friday", 8),
    (" and", 0),
    (" the", 0),
    (" holiday", 1),
    (" on", 0),
    (" Monday", 9),
    (".", 0),
    ("\n", 0),
]
_SORTED: Window = [
    ("if", 0),
    (" len", 0),
    ("(", 0),
    ("items", 0),
    (")", 8),
    (" >", 0),
    (" max", 0),
    ("(", 0),
    ("sizes", 0),
    (")", 7),
    (":", 0),
    ("\n", 0),
    ("   ", 0),
    (" return", 0),
    (" sorted", 0),
    ("(", 0),
    ("items", 0),
    (",", 0),
    (" key", 0),
    ("=", 0),
    ("len", 0),
    (")[", 5),
    ("0", 0),
    ("]", 9),
    ("\n", 0),
]
_NEGATION: Window = [
    ("I", 0),
    (" do", 0),
    (" not", 9),
    (" think", 1),
    (" she", 0),
    (" can", 0),
    ("'t", 8),
    (" come", 0),
    (",", 0),
    (" and", 0),
    (" nobody", 7),
    (" will", 0),
    (" ever", 2),
    (" know", 0),
    (" why", 0),
    (" it", 0),
    (" never", 9),
    (" worked", 0),
    (".", 0),
    (" No", 6),
    (" one", 1),
    (" asked", 0),
    (".", 0),
]

SIMULATE_EXAMPLES: list[tuple[str, Window]] = [
    ("names of weekdays", _MARKET),
    ("closing brackets in code", _SORTED),
    ("words that negate a statement", _NEGATION),
]
"""(explanation, window on the 0-9 scale) pairs shown to the simulator."""


# --- explainer ----------------------------------------------------------------------------------

EXPLAIN_SYSTEM = (
    "You study single neurons inside a language model. You are shown text windows in which one neuron "
    "fired. Each line holds a token, a tab, and the neuron's activation on that token, from 0 (silent) "
    "to 10 (strongest). Work out what the strongly activating tokens have in common and describe it in "
    f'one short sentence that begins "{ANSWER_LEAD}". Describe the pattern; do not list tokens one by one.'
)


def format_explain_windows(windows: list[Window]) -> str:
    """Windows as token<TAB>activation lines, each between <window i> and </window> markers.

    A sparse window (few non-zero activations) is followed by its non-zero pairs again, so they stand out.
    """
    parts = []
    for i, window in enumerate(windows, 1):
        lines = [f"<window {i}>", *_token_lines(window), "</window>"]
        nonzero = [(t, a) for t, a in window if a > 0]
        if nonzero and len(nonzero) < SPARSE_FRACTION * len(window):
            lines.append(f"Non-zero activations in window {i}:")
            lines += _token_lines(nonzero)
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


EXPLAIN_OUTPUT_NOTE = (
    " After the windows come the tokens the neuron's output pushes the model's next-token prediction towards and "
    "away from (its direct effect on the logits). Where they share something, end the same sentence with what the "
    'neuron does, after ", and pushes towards".'
)
"""Added to the system prompt when the explainer is shown what the neuron writes (`--explain.show-output`)."""

Writes = tuple[list[str], list[str]]
"""What a neuron writes, for a prompt: the tokens it raises most and those it lowers most."""

EXAMPLE_WRITES: list[tuple[Writes, str]] = [
    (
        ([" morning", " evening", " night", " afternoon", " mornings"], [" the", "ing", " of", " a", "ed"]),
        "names of weekdays, and pushes towards a time of day",
    ),
    (
        ([" #", ";", "\n", " +", " =="], [" x", "len", "(", " print", "_"]),
        "closing brackets in code, and pushes towards what follows a finished call (an operator, a comment, a line "
        "end)",
    ),
]
"""For each of `EXPLAIN_EXAMPLES`, invented output tokens and the explanation that uses them (our own words)."""


def format_writes(writes: Writes) -> str:
    raised, lowered = writes
    show = lambda tokens: ", ".join(repr(t) for t in tokens)  # noqa: E731
    return f"Its output raises: {show(raised)}\nIts output lowers: {show(lowered)}"


def explain_user_message(windows: list[Window], writes: Writes | None = None) -> str:
    extra = "" if writes is None else f"\n\n{format_writes(writes)}"
    return f"{format_explain_windows(windows)}{extra}\n\nWhat does this neuron respond to?"


def explain_messages(windows: list[Window], writes: Writes | None = None) -> list[dict[str, str]]:
    """Chat messages asking for one explanation of the neuron behind `windows` (0-10 activations); with `writes`, the
    neuron's strongest raised and lowered output tokens are shown too (and the examples show theirs)."""
    system = EXPLAIN_SYSTEM if writes is None else EXPLAIN_SYSTEM + EXPLAIN_OUTPUT_NOTE
    messages = [{"role": "system", "content": system}]
    for (example_windows, explanation), (example_writes, with_output) in zip(
        EXPLAIN_EXAMPLES, EXAMPLE_WRITES, strict=True
    ):
        shown = None if writes is None else example_writes
        messages.append({"role": "user", "content": explain_user_message(example_windows, shown)})
        said = explanation if writes is None else with_output
        messages.append({"role": "assistant", "content": f"{ANSWER_LEAD} {said}."})
    messages.append({"role": "user", "content": explain_user_message(windows, writes)})
    return messages


_LEADS = re.compile(
    r"^(?:(?:it|this neuron|the neuron|neuron \w+)\s+)?(?:will\s+|is\s+|mainly\s+|mostly\s+)?"
    r"(?:fires?|activates?|activated|responds?|reacts?|detects?|looks)\s+(?:(?:on|to|for|whenever|when|by|at)\b)?\s*",
    re.IGNORECASE,
)


def parse_explanation(text: str) -> str | None:
    """The explanation in an explainer's answer: first sentence, lead-in removed; None when unusable.

    Unusable: empty, a tab-separated token listing, or a list of four or more quoted tokens.
    """
    lines = [ln.strip().strip("*").strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    line = lines[0].strip("\"'` ")
    line = re.sub(r"^(?:answer|explanation|description)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = _LEADS.sub("", line, count=1)
    line = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0].strip().rstrip(".!").strip("\"' ")
    if len(line) < 2 or "\t" in line or len(re.findall(r"[\"'“‘][^\"'”’]{1,20}[\"'”’]", line)) >= 4:
        return None
    words = line.split()
    if len(words) > 40:
        return None
    return line


# --- simulator ----------------------------------------------------------------------------------

SIMULATE_INTRO = (
    "A language model has neurons that each give every token of a text an activation from 0 (silent) "
    f"to {SIM_MAX} (strongest). Below, each neuron has a short description, followed by a text with "
    "one token per line: the token, a tab, and the neuron's activation on it.\n\n"
)


def _sim_block(index: int, explanation: str) -> str:
    return f"Neuron {index}\nDescription: it fires on {explanation}.\n<start>\n"


def simulate_prefix(explanation: str) -> str:
    """The all-at-once prompt up to the first target token: intro, worked examples, the explanation."""
    parts = [SIMULATE_INTRO]
    for i, (ex_expl, window) in enumerate(SIMULATE_EXAMPLES, 1):
        body = "".join(f"{format_token(t)}\t{a}\n" for t, a in window)
        parts.append(_sim_block(i, ex_expl) + body + "<end>\n\n")
    parts.append(_sim_block(len(SIMULATE_EXAMPLES) + 1, explanation))
    return "".join(parts)


def simulate_window_text(tokens: list[str]) -> tuple[str, list[int]]:
    """The target window, one `token<TAB>?` line per token, and each placeholder's character offset."""
    text, offsets = "", []
    for t in tokens:
        text += f"{format_token(t)}\t"
        offsets.append(len(text))
        text += f"{PLACEHOLDER}\n"
    return text + "<end>\n", offsets


SIMULATE_CHAT_SYSTEM = (
    "You predict how one neuron of a language model responds to text. The neuron gives every token an "
    f"activation from 0 (silent) to {SIM_MAX} (strongest). You get a description of the neuron and a "
    "text split into tokens, one per line. Copy every token line in order and add a tab and the "
    "activation, one digit. Write nothing else."
)


def _chat_user(explanation: str, tokens: list[str]) -> str:
    body = "\n".join(format_token(t) for t in tokens)
    return f"Description: it fires on {explanation}.\nTokens:\n{body}"


def simulate_messages(explanation: str, tokens: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for a token<TAB>digit line per token."""
    messages = [{"role": "system", "content": SIMULATE_CHAT_SYSTEM}]
    for ex_expl, window in SIMULATE_EXAMPLES:
        messages.append({"role": "user", "content": _chat_user(ex_expl, [t for t, _ in window])})
        messages.append({"role": "assistant", "content": "\n".join(f"{format_token(t)}\t{a}" for t, a in window)})
    messages.append({"role": "user", "content": _chat_user(explanation, tokens)})
    return messages


@dataclass
class ParsedLine:
    """One `token<TAB>digit` line of a chat simulator's answer."""

    token: str
    digit: int
    digit_offset: int
    """Character offset of the digit in the answer."""


def parse_simulation_lines(text: str) -> list[ParsedLine]:
    """Every line that ends in a tab (or spaces) and one digit 0-9; other lines are ignored."""
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        m = re.match(r"^(.*?)[\t ]+([0-9])\s*$", line.rstrip("\r\n"))
        if m:
            out.append(ParsedLine(m.group(1), int(m.group(2)), pos + m.start(2)))
        pos += len(line)
    return out


def align_lines(tokens: list[str], lines: list[ParsedLine]) -> list[ParsedLine | None]:
    """Match parsed lines to the window's tokens: by position when the counts agree, else by token text in order."""
    if len(lines) == len(tokens):
        return list(lines)
    out: list[ParsedLine | None] = []
    j = 0
    for t in tokens:
        want = format_token(t).strip()
        k = j
        while k < len(lines) and lines[k].token.strip() != want:
            k += 1
        if k < len(lines):
            out.append(lines[k])
            j = k + 1
        else:
            out.append(None)
    return out


# --- revision: proposals that test an explanation, and the revised explanation ------------------

KINDS = ("fire", "silent")
"""Proposals meant to make the neuron fire, and proposals meant to leave it silent."""

PROPOSE_SYSTEM = (
    "You test explanations of single neurons in a language model. Given an explanation of what makes a "
    "neuron fire, write short, varied texts of one sentence each, as asked. One text per line, numbered "
    "1., 2., ... Write nothing else."
)
_ASK = {
    "fire": "Write {n} texts that, by this explanation, should make the neuron fire strongly.",
    "silent": "Write {n} texts that, by this explanation, should leave the neuron silent.",
}
PROPOSE_EXAMPLES: dict[str, str] = {
    "fire": "1. We could meet on Tuesday after lunch.\n2. The shop is closed every Sunday.\n3. See you Friday!",
    "silent": "1. The river flows slowly to the sea.\n2. She painted the fence green.\n3. Add two cups of flour.",
}
"""Worked answers for the explanation `names of weekdays`, shown before the real request."""
EXAMPLE_EXPLANATION = "names of weekdays"


def _propose_user(explanation: str, kind: str, n: int) -> str:
    return f"Explanation: it fires on {explanation}.\n{_ASK[kind].format(n=n)}"


def proposal_messages(explanation: str, kind: str, n: int) -> list[dict[str, str]]:
    """Chat messages asking for `n` texts of one kind (`fire` or `silent`) for an explanation."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    example_n = PROPOSE_EXAMPLES[kind].count("\n") + 1
    return [
        {"role": "system", "content": PROPOSE_SYSTEM},
        {"role": "user", "content": _propose_user(EXAMPLE_EXPLANATION, kind, example_n)},
        {"role": "assistant", "content": PROPOSE_EXAMPLES[kind]},
        {"role": "user", "content": _propose_user(explanation, kind, n)},
    ]


def parse_proposals(text: str, n: int, max_chars: int = 200) -> list[str]:
    """Up to `n` distinct numbered texts from an answer, each cut to `max_chars`; [] when none is numbered."""
    out: list[str] = []
    for line in parse_numbered_lines(text):
        line = line[:max_chars].strip()
        if line and line.lower() not in {o.lower() for o in out}:
            out.append(line)
    return out[:n]


REVISE_SYSTEM = (
    "You improve explanations of single neurons in a language model. You get the current explanation, "
    "texts where the neuron fired most strongly, and test texts on which the explanation was wrong. "
    "Texts are shown one token per line: the token, a tab, and the neuron's real activation from 0 "
    f'(silent) to 10 (strongest). Write a better explanation in one short sentence that begins "{ANSWER_LEAD}". '
    "Describe the pattern; do not list tokens one by one."
)
_EXPECTED = {"fire": "meant to make it fire, but it stayed silent", "silent": "meant to leave it silent, but it fired"}


def revision_messages(
    explanation: str, mismatches: list[Mismatch], top_windows: list[Window] | None = None
) -> list[dict[str, str]]:
    """Chat messages asking to revise `explanation` given the proposals it got wrong, with their real activations."""
    parts = [f"Current explanation: it fires on {explanation}."]
    if top_windows:
        parts.append("Texts where the neuron fired most strongly:")
        for i, window in enumerate(top_windows, 1):
            parts.append("\n".join([f"<window {i}>", *_token_lines(window), "</window>"]))
    parts.append("Test texts the explanation got wrong:")
    for i, m in enumerate(mismatches, 1):
        lines = [f"<test {i}> {_EXPECTED[m.kind]} (peak {m.probe.max_normalized} of 10)"]
        lines += _token_lines(list(zip(m.probe.tokens, m.probe.normalized, strict=True)))
        parts.append("\n".join([*lines, "</test>"]))
    parts.append("Write the better explanation.")
    return [{"role": "system", "content": REVISE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_numbered_lines(text: str) -> list[str]:
    """Texts of lines numbered `1.` or `1)`; surrounding quotes removed."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*\d+[.)]\s*(.+?)\s*$", line)
        if m:
            out.append(m.group(1).strip().strip("\"'“”").strip())
    return [t for t in out if t]


# --- detection and fuzzing: cheaper scorers than simulation ------------------------------------------------

DETECT_SYSTEM = (
    "You check explanations of a neuron inside a language model. You are given what the neuron is said to respond "
    "to and several numbered texts. Some texts make the neuron fire, the others leave it silent. For every text, "
    "write its number, a colon and 1 if the explanation says the neuron fires on something in it, else 0. One "
    "line per text, nothing else."
)
FUZZ_SYSTEM = (
    "You check explanations of a neuron inside a language model. You are given what the neuron is said to respond "
    "to and several numbered texts in which some tokens are marked like <<this>>. In some texts the marks sit where "
    "the neuron fires; in others they were placed at random. For every text, write its number, a colon and 1 if the "
    "marked tokens are what the explanation describes, else 0. One line per text, nothing else."
)
CLASSIFY_EXAMPLE = (
    "numbers written with digits",
    ["The train leaves at 7 and arrives at 9.", "She smiled and walked into the garden.", "Page 12 of the report."],
    [
        "The train leaves at <<7>> and arrives at <<9>>.",
        "She <<smiled>> and walked into the garden.",
        "Page <<12>> of the report.",
    ],  # fmt: skip
    [1, 0, 1],
)
"""One worked example (explanation, detection texts, fuzzing texts, answers), our own."""


def _numbered(texts: list[str]) -> str:
    return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))


def _classify_chat(system: str, explanation: str, texts: list[str], example_texts: list[str]) -> list[dict]:
    ex_expl, _, _, ex_answers = CLASSIFY_EXAMPLE
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Explanation: {ex_expl}\nTexts:\n{_numbered(example_texts)}"},
        {"role": "assistant", "content": "\n".join(f"{i + 1}: {a}" for i, a in enumerate(ex_answers))},
        {"role": "user", "content": f"Explanation: {explanation}\nTexts:\n{_numbered(texts)}"},
    ]


def detection_messages(explanation: str, texts: list[str]) -> list[dict[str, str]]:
    """Chat messages asking which of `texts` make the neuron fire, one `N: 0|1` line each."""
    return _classify_chat(DETECT_SYSTEM, explanation, texts, CLASSIFY_EXAMPLE[1])


def fuzzing_messages(explanation: str, texts: list[str]) -> list[dict[str, str]]:
    """Chat messages asking whether the <<marked>> tokens of each text fit the explanation, one `N: 0|1` line each."""
    return _classify_chat(FUZZ_SYSTEM, explanation, texts, CLASSIFY_EXAMPLE[2])


def mark_tokens(tokens: list[str], marked: list[bool]) -> str:
    """A window's text with the marked tokens (runs of them) wrapped in << >>."""
    out, inside = [], False
    for tok, m in zip(tokens, marked, strict=True):
        if m and not inside:
            lead = tok[: len(tok) - len(tok.lstrip())]
            out.append(f"{lead}<<{tok[len(lead) :]}")
            inside = True
        elif not m and inside:
            out[-1] += ">>"
            out.append(tok)
            inside = False
        else:
            out.append(tok)
    if inside:
        out[-1] += ">>"
    return "".join(out).replace("\n", " ")


def parse_label_positions(text: str, n: int) -> list[tuple[int | None, int | None]]:
    """For each of `n` numbered texts, its 0/1 answer and the character offset of that digit in `text` (where the
    answer's log-probabilities say how sure it was); (None, None) where no `N: 0|1` line answers it."""
    out: list[tuple[int | None, int | None]] = [(None, None)] * n
    pos = 0
    for line in text.splitlines(keepends=True):
        m = re.match(r"^\s*(\d+)(?:\s*[:.)-]\s*|\s+)([01])\s*$", line)  # "10" is item 10, not item 1 = 0
        if m and 1 <= int(m.group(1)) <= n and out[int(m.group(1)) - 1][0] is None:
            out[int(m.group(1)) - 1] = (int(m.group(2)), pos + m.start(2))
        pos += len(line)
    return out
