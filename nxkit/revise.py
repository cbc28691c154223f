"""Counterexample-driven revision: test an explanation on texts the explainer writes, revise it where it fails.

One round, for a neuron and its current explanation:
1. the explainer proposes short texts that, by the explanation, should make the neuron fire, and
   texts that should leave it silent (two requests, each answered as a numbered list);
2. the subject model gives their real activations (`nxkit.probe`, the collection's hook and scale);
3. the mismatches (meant to fire but silent, meant to be silent but firing), with their real
   per-token activations, go back to the explainer, which writes a revised explanation;
4. the revision is simulated and scored on the same held-out windows as the original (never on the
   counterexamples), and the better of the two is kept.

On disk: `runs/<name>/revisions/{layer}/{neuron}.json`, one file per neuron with every round.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from . import prompts
from .explain import held_out, simulate_and_score, train_windows
from .llm import Backend, LLMError, run_sync
from .probe import ProbeError, probe_many
from .records import ActivationRecord, NeuronId, NeuronRecord, normalize_activations, split_records
from .runs import Run
from .score import random_only
from .simulate import SimulateError, Simulator
from .subject import SubjectError

log = logging.getLogger(__name__)

KINDS = ("fire", "silent")
STATUSES = ("done", "skipped", "failed")


class ReviseError(ValueError):
    """A revision that cannot run as configured, or a run that has nothing to revise."""


@dataclass
class ReviseConfig:
    """Settings of counterexample revision (saved in the run manifest)."""

    rounds: int = 1
    """Propose-probe-revise rounds per neuron; each starts from the better explanation so far."""
    n_fire: int = 4
    """Texts asked for that, by the explanation, should make the neuron fire."""
    n_silent: int = 4
    """Texts asked for that, by the explanation, should leave the neuron silent."""
    fire_threshold: float = 0.3
    """A text fires when its peak activation reaches this fraction of the neuron's top-window maximum."""
    max_text_chars: int = 200
    """Longer proposals are cut to this many characters before probing."""
    n_top_windows: int = 2
    """Top training windows shown again with the mismatches, so the revision stays grounded."""
    top_window_tokens: int = 16
    """Tokens shown per top window, around its peak."""
    temperature: float = 0.7
    """Sampling temperature of proposals and revisions."""
    proposal_max_tokens: int = 160
    """Tokens a list of proposals may take."""
    revision_max_tokens: int = 48
    """Tokens a revised explanation may take."""
    seed: int = 0
    """Seed of round r's requests: seed + 3r (fire), + 1 (silent), + 2 (revision)."""
    only_below: float | None = None
    """Revise only neurons whose original score is below this (None: every scored neuron)."""
    rescore_original: bool | None = None
    """Re-simulate the original on the held-out windows; None: only when the simulator differs from the run's."""

    def __post_init__(self):
        if self.rounds < 1:
            raise ReviseError(f"rounds must be >= 1, got {self.rounds}")
        if self.n_fire < 0 or self.n_silent < 0 or self.n_fire + self.n_silent < 1:
            raise ReviseError("n_fire and n_silent must be >= 0 and ask for at least one text together")
        if not 0 < self.fire_threshold < 1:
            raise ReviseError(
                f"fire_threshold is a fraction of the neuron's maximum in (0, 1), got {self.fire_threshold}"
            )
        if self.max_text_chars < 1 or self.proposal_max_tokens < 1 or self.revision_max_tokens < 1:
            raise ReviseError("max_text_chars, proposal_max_tokens and revision_max_tokens must be >= 1")
        if self.n_top_windows < 0 or self.top_window_tokens < 1:
            raise ReviseError("n_top_windows must be >= 0 and top_window_tokens >= 1")
        if self.temperature < 0:
            raise ReviseError("temperature must be >= 0")


# --- prompts (our own wording) -----------------------------------------------------------------

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
        raise ReviseError(f"kind must be one of {KINDS}, got {kind!r}")
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
    for line in prompts.parse_numbered_lines(text):
        line = line[:max_chars].strip()
        if line and line.lower() not in {o.lower() for o in out}:
            out.append(line)
    return out[:n]


REVISE_SYSTEM = (
    "You improve explanations of single neurons in a language model. You get the current explanation, "
    "texts where the neuron fired most strongly, and test texts on which the explanation was wrong. "
    "Texts are shown one token per line: the token, a tab, and the neuron's real activation from 0 "
    f'(silent) to 10 (strongest). Write a better explanation in one short sentence that begins "{prompts.ANSWER_LEAD}". '
    "Describe the pattern; do not list tokens one by one."
)
_EXPECTED = {"fire": "meant to make it fire, but it stayed silent", "silent": "meant to leave it silent, but it fired"}


def _token_lines(pairs: list[tuple[str, int]]) -> list[str]:
    return [f"{prompts.format_token(t)}\t{a}" for t, a in pairs]


def revision_messages(
    explanation: str, mismatches: list[dict], top_windows: list[prompts.Window] | None = None
) -> list[dict[str, str]]:
    """Chat messages asking to revise `explanation` given mismatched texts (dicts with `kind`, `tokens`, `normalized`)."""
    parts = [f"Current explanation: it fires on {explanation}."]
    if top_windows:
        parts.append("Texts where the neuron fired most strongly:")
        for i, window in enumerate(top_windows, 1):
            parts.append("\n".join([f"<window {i}>", *_token_lines(window), "</window>"]))
    parts.append("Test texts the explanation got wrong:")
    for i, m in enumerate(mismatches, 1):
        lines = [f"<test {i}> {_EXPECTED[m['kind']]} (peak {m['max_normalized']} of 10)"]
        lines += _token_lines(list(zip(m["tokens"], m["normalized"], strict=True)))
        parts.append("\n".join([*lines, "</test>"]))
    parts.append("Write the better explanation.")
    return [{"role": "system", "content": REVISE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


# --- pure steps --------------------------------------------------------------------------------


def describe_probe(text: str, record: ActivationRecord, max_activation: float) -> dict:
    """A probed text as JSON: tokens, real activations and their peak, in the neuron's units and 0-10."""
    normalized = normalize_activations(record.activations, max_activation)
    return {
        "text": text,
        "tokens": list(record.tokens),
        "activations": [round(a, 6) for a in record.activations],
        "max_activation": round(record.max_activation, 6),
        "normalized": normalized,
        "max_normalized": max(normalized, default=0),
    }


def find_mismatches(activations: dict[str, list[dict]], max_activation: float, fire_threshold: float) -> list[dict]:
    """Proposals whose real peak contradicts their kind: `fire` below the threshold, `silent` at or above it.

    The threshold is `fire_threshold` x the neuron's maximum over its top windows.
    """
    level = fire_threshold * max_activation
    out = []
    for kind in KINDS:
        for i, p in enumerate(activations.get(kind, [])):
            fired = p["max_activation"] >= level
            if fired != (kind == "fire"):
                out.append({"kind": kind, "index": i, **p})
    return out


def held_out_windows(run: Run, nid: NeuronId, record: NeuronRecord | None = None) -> list[ActivationRecord]:
    """The windows the original explanation was scored on, read back from its explanation file.

    Falls back to the whole valid split of the collection when the run has no explanation file.
    """
    results = run.read_results(nid)
    if results is not None and results.scored_explanations:
        seqs = results.scored_explanations[0].scored_simulation.scored_sequence_simulations
        return [ActivationRecord(list(s.simulation.tokens), list(s.true_activations)) for s in seqs]
    if record is None:
        record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
    return split_records(record, "valid")


def top_windows(record: NeuronRecord, config: ReviseConfig) -> list[prompts.Window]:
    """The strongest training windows, cropped around their peaks, on the 0-10 scale."""
    return train_windows(record, config.n_top_windows, config.top_window_tokens)


def sample_live_neurons(acts, n: int, seed: int = 0, layers: list[int] | None = None) -> list[NeuronId]:
    """`n` neurons drawn at random (by `seed`) from a collection's layers, skipping those that never fire."""
    pool = [NeuronId(layer, i) for layer in (layers or acts.layers) for i in range(acts.d_mlp)]
    random.Random(seed).shuffle(pool)
    out = []
    for nid in pool:
        if len(out) == n:
            break
        if acts.neuron_record(nid.layer_index, nid.neuron_index).max_activation > 0:
            out.append(nid)
    return out


# --- one round ---------------------------------------------------------------------------------


def propose(explainer: Backend, explanation: str, config: ReviseConfig, round_index: int = 0) -> dict:
    """Ask for fire and silent texts; returns {proposals: {fire, silent}, raw: {fire, silent}}."""
    proposals: dict[str, list[str]] = {}
    raw: dict[str, str | None] = {}
    for k, kind in enumerate(KINDS):
        n = config.n_fire if kind == "fire" else config.n_silent
        if n == 0:
            proposals[kind], raw[kind] = [], None
            continue
        answer = run_sync(
            explainer.chat(
                proposal_messages(explanation, kind, n),
                max_tokens=config.proposal_max_tokens,
                temperature=config.temperature,
                seed=config.seed + 3 * round_index + k,
            )
        )
        raw[kind] = answer.text
        proposals[kind] = parse_proposals(answer.text, n, config.max_text_chars)
    return {"proposals": proposals, "raw": raw}


def probe_proposals(model, layer: int, neuron: int, proposals: dict[str, list[str]], max_activation: float) -> dict:
    """Real activations of every proposal, per kind (one batched forward pass)."""
    texts = [t for kind in KINDS for t in proposals.get(kind, [])]
    records = probe_many(model, texts, layer, neuron) if texts else []
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    i = 0
    for kind in KINDS:
        for text in proposals.get(kind, []):
            out[kind].append(describe_probe(text, records[i], max_activation))
            i += 1
    return out


def unparsable_reason(proposals: dict[str, list[str]], config: ReviseConfig) -> str | None:
    """Why a round's proposals cannot be used (a kind that was asked for came back with no numbered text)."""
    missing = [
        kind for kind in KINDS if (config.n_fire if kind == "fire" else config.n_silent) > 0 and not proposals[kind]
    ]
    if missing:
        return f"unparsable proposal list: no numbered {' or '.join(missing)} texts in the answer (see raw)"
    return None


def write_revision(explainer: Backend, explanation: str, mismatches: list[dict], windows, config, round_index: int):
    """Ask for a revised explanation; returns (parsed text or None, raw answer)."""
    answer = run_sync(
        explainer.chat(
            revision_messages(explanation, mismatches, windows),
            max_tokens=config.revision_max_tokens,
            temperature=config.temperature,
            seed=config.seed + 3 * round_index + 2,
        )
    )
    return prompts.parse_explanation(answer.text), answer.text


def score_on(simulator: Simulator, explanation: str, windows: list[ActivationRecord], max_activation: float) -> dict:
    """Correlation score of `explanation` on `windows` (top-and-random and random-only), with failures."""
    scored, failures = run_sync(simulate_and_score(simulator, explanation, windows, max_activation))
    return {
        "score": scored.ev_correlation_score,
        "random_only": random_only(scored, max_activation).ev_correlation_score,
        "n_failed_windows": len(failures),
    }


def _better(new: float | None, old: float | None) -> bool:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    return old is None or new > old


def revise_round(
    model,
    record: NeuronRecord,
    explanation: str,
    score: float | None,
    windows: list[ActivationRecord],
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig,
    round_index: int = 0,
) -> dict:
    """One propose-probe-revise-score round from `explanation` (whose score on `windows` is `score`)."""
    nid = record.neuron_id
    out: dict = {
        "round": round_index,
        "explanation": explanation,
        "score_explanation": score,
        "proposals": {kind: [] for kind in KINDS},
        "raw": {kind: None for kind in KINDS},
        "activations": {kind: [] for kind in KINDS},
        "mismatches": [],
        "revised": None,
        "raw_revision": None,
        "score_revised": None,
        "kept": "original",
        "skipped_reason": None,
    }
    out.update(propose(explainer, explanation, config, round_index))
    if reason := unparsable_reason(out["proposals"], config):
        out["skipped_reason"] = reason
        return out
    max_act = record.max_activation
    out["activations"] = probe_proposals(model, nid.layer_index, nid.neuron_index, out["proposals"], max_act)
    out["mismatches"] = [
        {k: m[k] for k in ("kind", "index", "text", "max_activation", "max_normalized")}
        for m in find_mismatches(out["activations"], max_act, config.fire_threshold)
    ]
    if not out["mismatches"]:
        out["skipped_reason"] = "no mismatches: every proposal behaved as the explanation predicted"
        return out
    full = [{**out["activations"][m["kind"]][m["index"]], "kind": m["kind"]} for m in out["mismatches"]]
    revised, raw = write_revision(explainer, explanation, full, top_windows(record, config), config, round_index)
    out["raw_revision"] = raw
    if revised is None:
        out["skipped_reason"] = "unparsable revision: the answer held no usable explanation (see raw_revision)"
        return out
    out["revised"] = revised
    if revised.strip().lower() == explanation.strip().lower():
        out["skipped_reason"] = "the revision repeats the current explanation"
        return out
    scored = score_on(simulator, revised, windows, max_act)
    out["score_revised"], out["random_only_revised"] = scored["score"], scored["random_only"]
    out["n_failed_windows"] = scored["n_failed_windows"]
    if _better(scored["score"], score):
        out["kept"] = "revised"
    return out


# --- one neuron, a run -------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def revision_path(run: Run, layer: int, neuron: int) -> Path:
    """`runs/<name>/revisions/{layer}/{neuron}.json`."""
    return run.path / "revisions" / str(layer) / f"{neuron}.json"


def read_revision(run: Run | str, layer: int, neuron: int) -> dict | None:
    """A neuron's revision file, or None when it has none."""
    path = revision_path(_as_run(run), layer, neuron)
    return json.loads(path.read_text()) if path.exists() else None


def load_revisions(run: Run | str) -> list[dict]:
    """Every revision file of a run, sorted by neuron."""
    root = _as_run(run).path / "revisions"
    files = [p for p in root.glob("*/*.json") if p.stem.isdigit() and p.parent.name.isdigit()] if root.exists() else []
    return [json.loads(p.read_text()) for p in sorted(files, key=lambda p: (int(p.parent.name), int(p.stem)))]


def _as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


def _simulator_changed(run: Run, simulator: Simulator) -> bool:
    explain = run.manifest().get("explain") or {}
    return explain.get("simulator") != repr(simulator)


def revise_neuron(
    run: Run | str,
    model,
    layer: int,
    neuron: int,
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig | None = None,
) -> dict:
    """Revise one neuron's chosen explanation for `config.rounds` rounds; writes and returns its revision file.

    Status `skipped` when the run has no scored explanation for it (or it already scores above
    `only_below`); `failed` when an LLM, simulator or probe error stopped it (reason says which).
    """
    run, config = _as_run(run), config or ReviseConfig()
    nid = NeuronId(layer, neuron)
    t0 = time.perf_counter()
    summary = run.read_neuron(nid) or {}
    original = summary.get("explanation")
    out: dict = {
        "neuron": [layer, neuron],
        "original_explanation": original,
        "final_explanation": original,
        "score_before": summary.get("top_and_random"),
        "score_after": summary.get("top_and_random"),
        "status": "done",
        "reason": None,
        "score_before_source": "run",
        "n_held_out_windows": None,
        "config": asdict(config),
        "rounds": [],
    }
    if summary.get("status") != "done" or not original:
        out["status"] = "skipped"
        out["reason"] = (
            "no explanation in the run: explain and score this neuron first"
            if not summary
            else f"the run's status for this neuron is {summary.get('status')!r}, not 'done'"
        )
    elif config.only_below is not None and out["score_before"] is not None and out["score_before"] >= config.only_below:
        out["status"] = "skipped"
        out["reason"] = f"score {out['score_before']:.3f} is not below only_below={config.only_below}"
    else:
        try:
            _revise_rounds(out, run, model, nid, explainer, simulator, config)
        except (LLMError, SimulateError, ProbeError, SubjectError) as exc:
            out["status"] = "failed"
            out["reason"] = f"{type(exc).__name__}: {exc}"
            log.warning("revision of %s failed: %s", nid, out["reason"])
    out["seconds"] = round(time.perf_counter() - t0, 2)
    _atomic_write(revision_path(run, layer, neuron), json.dumps(out, indent=1))
    return out


def _revise_rounds(out: dict, run: Run, model, nid: NeuronId, explainer, simulator, config: ReviseConfig) -> None:
    record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
    windows = held_out_windows(run, nid, record)
    out["n_held_out_windows"] = len(windows)
    rescore = _simulator_changed(run, simulator) if config.rescore_original is None else config.rescore_original
    if rescore:
        out["score_before"] = score_on(simulator, out["original_explanation"], windows, record.max_activation)["score"]
        out["score_before_source"] = "rescored"
    current, score = out["original_explanation"], out["score_before"]
    for r in range(config.rounds):
        rnd = revise_round(model, record, current, score, windows, explainer, simulator, config, r)
        out["rounds"].append(rnd)
        if rnd["kept"] == "revised":
            current, score = rnd["revised"], rnd["score_revised"]
    out["final_explanation"], out["score_after"] = current, score
    skipped = [rnd["skipped_reason"] for rnd in out["rounds"] if rnd["skipped_reason"]]
    if len(skipped) == len(out["rounds"]):
        out["reason"] = f"every round was skipped: {skipped[0]}" + (" (and others)" if len(set(skipped)) > 1 else "")


def revise_run(
    run: Run | str,
    model,
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig | None = None,
    neurons: list[NeuronId] | None = None,
    progress: bool = True,
    retry_failed: bool = False,
) -> list[dict]:
    """Revise `neurons` (default: every neuron the run scored); returns their revision files' contents.

    Neurons that already have a revision file are read back, not redone (a stopped run resumes);
    `retry_failed` redoes those that failed.
    """
    run, config = _as_run(run), config or ReviseConfig()
    if neurons is None:
        neurons = run.done_neurons(("done",))
        if not neurons:
            raise ReviseError(f"{run.path} has no explained and scored neurons; run explain_and_score first")
    run.update_manifest(revise={"config": asdict(config), "explainer": repr(explainer), "simulator": repr(simulator)})
    out = []
    bar = tqdm(neurons, desc="revise", unit="neuron", disable=not progress)
    for nid in bar:
        existing = read_revision(run, nid.layer_index, nid.neuron_index)
        if existing is not None and not (retry_failed and existing.get("status") == "failed"):
            out.append(existing)
            continue
        out.append(revise_neuron(run, model, nid.layer_index, nid.neuron_index, explainer, simulator, config))
        stats = summarize(out)
        if stats["n_compared"]:
            bar.set_postfix(improved=f"{stats['n_improved']}/{stats['n_compared']}")
    return out


# --- what it did -------------------------------------------------------------------------------


def summarize(revisions: list[dict]) -> dict:
    """Counts by status, and over neurons with both scores defined: mean before, mean after, improved."""
    pairs = [
        (r["score_before"], r["score_after"])
        for r in revisions
        if r.get("status") == "done" and r.get("score_before") is not None and r.get("score_after") is not None
    ]
    n = len(pairs)
    return {
        "n_neurons": len(revisions),
        "statuses": {s: sum(r.get("status") == s for r in revisions) for s in STATUSES},
        "n_compared": n,
        "mean_before": sum(b for b, _ in pairs) / n if n else None,
        "mean_after": sum(a for _, a in pairs) / n if n else None,
        "n_improved": sum(a > b for b, a in pairs),
        "n_rounds": sum(len(r.get("rounds", [])) for r in revisions),
        "n_rounds_skipped": sum(bool(rnd.get("skipped_reason")) for r in revisions for rnd in r.get("rounds", [])),
    }


def proposals_table(round_: dict, max_activation: float, fire_threshold: float):
    """A round's probed proposals as a pandas table: kind, text, peak (units and 0-10), fired, mismatch."""
    import pandas as pd

    rows = []
    for kind in KINDS:
        for p in round_["activations"].get(kind, []):
            fired = p["max_activation"] >= fire_threshold * max_activation
            rows.append(
                {
                    "kind": kind,
                    "text": p["text"],
                    "peak": p["max_activation"],
                    "peak 0-10": p["max_normalized"],
                    "fired": fired,
                    "mismatch": fired != (kind == "fire"),
                }
            )
    return pd.DataFrame(rows, columns=["kind", "text", "peak", "peak 0-10", "fired", "mismatch"])


def before_after_figure(revisions: list[dict], title: str | None = None):
    """Scatter of each neuron's score before and after revision, with the no-change diagonal."""
    import plotly.graph_objects as go

    rows = [r for r in revisions if r.get("score_before") is not None and r.get("score_after") is not None]
    stats = summarize(revisions)
    fig = go.Figure()
    for label, pick, color in (
        ("revision kept", lambda r: r["final_explanation"] != r["original_explanation"], "#d62728"),
        ("original kept", lambda r: r["final_explanation"] == r["original_explanation"], "#1f77b4"),
    ):
        sel = [r for r in rows if pick(r)]
        fig.add_trace(
            go.Scatter(
                x=[r["score_before"] for r in sel],
                y=[r["score_after"] for r in sel],
                mode="markers",
                name=f"{label} ({len(sel)})",
                marker={"color": color, "size": 9},
                text=[
                    f"L{r['neuron'][0]}/N{r['neuron'][1]}<br>before: {r['original_explanation']}"
                    f"<br>after: {r['final_explanation']}"
                    for r in sel
                ],
                hovertemplate="%{text}<br>%{x:.3f} → %{y:.3f}<extra></extra>",
            )
        )
    values = [v for r in rows for v in (r["score_before"], r["score_after"])]
    lo, hi = (min(values + [0.0]), max(values + [0.0])) if values else (-1.0, 1.0)
    fig.add_trace(
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="no change", line={"color": "grey", "dash": "dot"})
    )
    if title is None and stats["n_compared"]:
        title = (
            f"Score before and after revision: mean {stats['mean_before']:+.3f} → {stats['mean_after']:+.3f}, "
            f"{stats['n_improved']} of {stats['n_compared']} improved"
        )
    fig.update_layout(
        title=title or "Score before and after revision",
        xaxis_title="score before (top-and-random correlation)",
        yaxis_title="score after",
        template="plotly_white",
    )
    return fig


def score_on_split(
    run: Run | str,
    revision: dict,
    simulator: Simulator,
    split: str = "test",
    n_windows: int | None = None,
    crop: int | None = None,
) -> dict:
    """Score a revision's original and final explanations on another split, unseen by the keep-the-better choice.

    Keeping the better of two scores on the same windows favours the revision by chance alone;
    this gives an unbiased comparison. The original is scored once when the final is the same text.
    """
    run = _as_run(run)
    layer, neuron = revision["neuron"]
    record = run.activations().neuron_record(layer, neuron)
    windows = held_out(record, split, n_windows, crop)
    original = score_on(simulator, revision["original_explanation"], windows, record.max_activation)["score"]
    same = revision["final_explanation"] == revision["original_explanation"]
    final = (
        original
        if same
        else score_on(simulator, revision["final_explanation"], windows, record.max_activation)["score"]
    )
    return {"split": split, "n_windows": len(windows), "original": original, "final": final}
