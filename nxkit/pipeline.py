"""The main job behind `nxkit run`: collection, explanation, simulation and scoring with the shuffled control,
revision, and the report, into one run directory.

Every stage resumes: a finished collection is reused, finished neurons are skipped, a stopped run
picks up where it was. The settings are saved in the run manifest under `pipeline`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .records import NeuronId
from .runs import Run

log = logging.getLogger(__name__)


class PipelineError(ValueError):
    """A run that cannot start as configured."""


@dataclass
class PipelineConfig:
    """Everything `nxkit run` does, in one place (saved in the run manifest)."""

    run_dir: str = "runs/demo"
    """Run directory (created; an existing one is resumed)."""
    model: str = "smollm2-135m"
    """Subject model: the offline default, or a TransformerLens / Hugging Face name (needs a hub)."""
    corpus: str = "default"
    """Corpus: default | fortunes | pydoc | hf:NAME | FILE.txt | FILE.jsonl."""
    max_tokens: int = 200_000
    """Corpus tokens to collect over."""
    window: int = 64
    """Tokens per window."""
    layers: list[int] | None = None
    """Layers to collect and explain (None: every layer)."""
    explain_layers: list[int] | None = None
    """Layers whose neurons are explained (None: every collected layer); collection still covers `layers`."""
    neurons: list[str] | None = None
    """Neurons to explain: `N` (that index in every layer) or `L:N`; None samples `sample` per layer."""
    sample: int = 2
    """Neurons sampled per layer (uniformly, with `seed`) when `neurons` is None."""
    seed: int = 0
    """Seed of the corpus windows, the neuron sample and the explainer's sampling."""
    explainer: str = "local"
    """`local` (the offline SmolLM2 in process) or a model name on an OpenAI-compatible server."""
    simulator: str | None = None
    """Like `explainer`; None uses the explainer's model."""
    base_url: str | None = None
    """OpenAI-compatible server of the explainer (None: $OPENAI_BASE_URL or OpenAI's API)."""
    simulator_base_url: str | None = None
    """Server of the simulator (None: `base_url`)."""
    best_of: int = 3
    """Explanations sampled per neuron; the best on the calibration windows is kept."""
    explain_windows: int = 5
    """Top windows shown to the explainer."""
    calibration_windows: int | None = 5
    """Top and random calibration windows, each, that rank the candidates."""
    valid_windows: int | None = None
    """Top and random valid windows, each, the chosen explanation is scored on (None: all 10 and 10)."""
    sim_window_tokens: int | None = None
    """Crop scored windows to this many tokens around their peak (None: whole windows)."""
    revision_rounds: int = 1
    """Counterexample-driven revision rounds per neuron (0 skips revision)."""
    top_k: int = 40
    """Top windows kept per neuron in collection (4 splits)."""
    n_random: int = 30
    """Random windows kept per neuron (3 splits)."""
    batch_size: int = 32
    """Windows per forward pass in collection."""
    compile: bool = True
    """torch.compile the collection's reductions."""
    checkpoint_seconds: float = 300.0
    """Seconds between collection checkpoints."""
    device: str | None = None
    """cpu | cuda (None: cuda when available)."""
    retry_failed: bool = False
    """Try neurons whose explanation failed before again."""
    report: bool = True
    """Write runs/<name>/report.html at the end."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self):
        if self.sample < 1 and not self.neurons:
            raise PipelineError("sample must be >= 1 when no neurons are listed; or list them with --neurons")
        if self.best_of < 1 or self.revision_rounds < 0 or self.max_tokens < self.window:
            raise PipelineError("best_of >= 1, revision_rounds >= 0 and max_tokens >= window are required")
        parse_neurons(self.neurons or [], [0])  # validates the syntax early


def parse_neurons(items: list[str], layers: list[int]) -> list[NeuronId]:
    """`N` means neuron N of every layer in `layers`; `L:N` one neuron of layer L."""
    out = []
    for item in items:
        try:
            if ":" in str(item):
                layer, neuron = (int(x) for x in str(item).split(":"))
                out.append(NeuronId(layer, neuron))
            else:
                out.extend(NeuronId(layer, int(item)) for layer in layers)
        except ValueError as exc:
            raise PipelineError(
                f"cannot read neuron {item!r}: write N (every chosen layer) or LAYER:N, e.g. 5:123"
            ) from exc
    return sorted(set(out))


def select_neurons(
    layers: list[int], d_mlp: int, neurons: list[str] | None = None, sample: int = 2, seed: int = 0
) -> list[NeuronId]:
    """The listed neurons, or `sample` per layer drawn uniformly (the same seed gives the same neurons)."""
    if neurons:
        chosen = parse_neurons(neurons, layers)
        bad = [n for n in chosen if n.layer_index not in layers or not 0 <= n.neuron_index < d_mlp]
        if bad:
            raise PipelineError(
                f"neuron {bad[0].layer_index}:{bad[0].neuron_index} is not in the collection "
                f"(layers {layers}, neurons 0 to {d_mlp - 1}); add its layer with --layers or pick another"
            )
        return chosen
    if sample > d_mlp:
        raise PipelineError(f"cannot sample {sample} neurons from a layer of {d_mlp}")
    return sorted(
        NeuronId(layer, n)
        for layer in layers
        for n in random.Random(seed * 100_003 + layer).sample(range(d_mlp), sample)
    )


@dataclass
class PipelineResult:
    """What a run did."""

    run: Run
    """The run directory."""
    neurons: list[NeuronId]
    """The neurons it covers."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage."""
    report: Path | None = None
    """The report, when written."""
    revision_skipped: str | None = None
    """Why revision did not run, when it did not."""


def _stage(i: int, n: int, text: str, progress: bool) -> None:
    if progress:
        print(f"\n[{i}/{n}] {text}", flush=True)


def make_llms(config: PipelineConfig):
    """The explainer backend and the simulator from the config (one local model serves both when both are local)."""
    from .llm import make_backend
    from .simulate import Simulator

    explainer = make_backend(config.explainer, **({"base_url": config.base_url} if config.explainer != "local" else {}))
    sim_spec = config.simulator or config.explainer
    sim_url = config.simulator_base_url or config.base_url
    if sim_spec == config.explainer and sim_url == config.base_url:
        backend = explainer
    else:
        backend = make_backend(sim_spec, **({"base_url": sim_url} if sim_spec != "local" else {}))
    return explainer, Simulator(backend)


def check_servers(*backends) -> None:
    """Ask each OpenAI-compatible backend's server for its models: an unreachable server or unknown model fails now."""
    from .llm import OpenAIBackend, run_sync

    for b in dict.fromkeys(backends):
        if isinstance(b, OpenAIBackend):
            run_sync(b.check())


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run (or resume) every stage; returns what was done. Prints a stage header and progress for each."""
    from .collect import Activations, CollectConfig, collect
    from .corpus import make_windows
    from .explain import ExplainConfig, explain_and_score, shuffled_controls
    from .subject import load_subject

    run = Run(config.run_dir)
    stages = 5 if config.revision_rounds else 4
    seconds: dict[str, float] = {}
    p = config.progress
    explainer, simulator = make_llms(config)
    check_servers(explainer, simulator.backend)  # fail before the collection, not after it

    t = time.perf_counter()
    _stage(1, stages, f"collection: {config.model} over {config.max_tokens:,} tokens of '{config.corpus}'", p)
    model = None
    acts_manifest = run.activations_dir / "manifest.json"
    if not (acts_manifest.exists() and _collection_complete(acts_manifest)):
        model = load_subject(config.model, device=config.device)
        windows = make_windows(
            model.tokenizer, config.corpus, window=config.window, max_tokens=config.max_tokens, seed=config.seed
        )
        if p:
            print(f"corpus: {windows.summary()}", flush=True)
        ccfg = CollectConfig(
            layers=config.layers,
            top_k=config.top_k,
            n_random=config.n_random,
            batch_size=config.batch_size,
            seed=config.seed,
            compile=config.compile,
            checkpoint_seconds=config.checkpoint_seconds,
        )
        collect(model, windows, run.activations_dir, ccfg, progress=p)
    elif p:
        print(f"reusing the finished collection in {run.activations_dir}", flush=True)
    acts = Activations(run.activations_dir)
    _check_same_collection(acts.manifest, config, run)
    run.update_manifest(pipeline=asdict(config))
    if config.layers and not set(config.layers) <= set(acts.layers):
        raise PipelineError(
            f"{run.path} was collected for layers {acts.layers}, not {sorted(set(config.layers) - set(acts.layers))}; "
            "use another run name for other layers"
        )
    layers = sorted(config.explain_layers or config.layers or acts.layers)
    if not set(layers) <= set(acts.layers):
        raise PipelineError(
            f"--explain-layers {sorted(set(layers) - set(acts.layers))} were not collected (collected: {acts.layers}); "
            "choose collected layers, or collect them with --layers"
        )
    neurons = select_neurons(layers, acts.d_mlp, config.neurons, config.sample, config.seed)
    run.update_manifest(neurons=[[n.layer_index, n.neuron_index] for n in neurons])
    seconds["collection"] = time.perf_counter() - t

    t = time.perf_counter()
    ecfg = ExplainConfig(
        n_candidates=config.best_of,
        n_windows=config.explain_windows,
        seed=config.seed,
        calibration_windows=config.calibration_windows,
        valid_windows=config.valid_windows,
        sim_window_tokens=config.sim_window_tokens,
    )
    todo = run.todo(neurons, config.retry_failed)
    _stage(
        2, stages, f"explanation and scoring: {len(todo)} of {len(neurons)} neurons to do (best of {config.best_of})", p
    )
    explain_and_score(run, neurons, explainer, simulator, ecfg, retry_failed=config.retry_failed, progress=p)
    seconds["explain+score"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(3, stages, "shuffled-explanation control (each neuron scored with another neuron's explanation)", p)
    shuffled_controls(run, simulator, ecfg, progress=p)
    seconds["shuffled control"] = time.perf_counter() - t

    skipped = None
    if config.revision_rounds:
        t = time.perf_counter()
        _stage(4, stages, f"revision: {config.revision_rounds} round(s) of counterexamples per neuron", p)
        try:
            from .revise import ReviseConfig, revise_run
        except ImportError as exc:
            skipped = f"nxkit.revise is not available ({exc}); revision skipped"
            log.warning(skipped)
        else:
            from .viz import revision_path

            pending = [n for n in neurons if not revision_path(run, n.layer_index, n.neuron_index).exists()]
            if model is None and (pending or config.retry_failed):
                model = load_subject(config.model, device=config.device)
            revise_run(
                run,
                model,
                explainer,
                simulator,
                ReviseConfig(rounds=config.revision_rounds, seed=config.seed),
                neurons=neurons,
                progress=p,
                retry_failed=config.retry_failed,
            )
        seconds["revision"] = time.perf_counter() - t

    report = None
    if config.report:
        from .report import write_report

        t = time.perf_counter()
        _stage(stages, stages, "report", p)
        report = write_report(run)
        seconds["report"] = time.perf_counter() - t
    run.update_manifest(pipeline_seconds={k: round(v, 1) for k, v in seconds.items()})
    return PipelineResult(run, neurons, seconds, report, skipped)


def _check_same_collection(manifest: dict, config: PipelineConfig, run: Run) -> None:
    """A resumed run must describe the same subject model and corpus as its collection."""
    from .subject import OFFLINE_ALIASES, OFFLINE_DEFAULT

    want = OFFLINE_DEFAULT if config.model in OFFLINE_ALIASES else config.model
    have = (manifest.get("model"), manifest.get("corpus", {}).get("source"))
    if have != (want, config.corpus):
        raise PipelineError(
            f"{run.path} was collected with model {have[0]!r} on corpus {have[1]!r}, not {want!r} on {config.corpus!r}; "
            "choose another run name (--name), or delete that run directory to start over"
        )


def _collection_complete(manifest_path: Path) -> bool:
    return json.loads(manifest_path.read_text()).get("status") == "complete"


def _fmt(v) -> str:
    return "    —" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def summary_table(run: Run, neurons: list[NeuronId] | None = None, width: int = 60) -> str:
    """A plain-text table of the run's neurons (scores, control, revision) with the means underneath."""
    from .score import mean_scores
    from .viz import neuron_table, share_above

    df = neuron_table(run)
    if neurons is not None:
        keep = {(n.layer_index, n.neuron_index) for n in neurons}
        df = df[[(r.layer, r.neuron) in keep for r in df.itertuples()]]
    head = f"{'layer':>5} {'neuron':>6} {'status':<7} {'score':>6} {'random':>6} {'shuffl':>6} {'gap':>6} {'revised':>7}  explanation"
    lines = [head, "-" * len(head)]
    for r in df.itertuples():
        text = r.explanation if isinstance(r.explanation, str) else (r.reason or "")
        text = text.replace("\n", " ")
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(
            f"{r.layer:>5} {r.neuron:>6} {r.status or '?':<7} {_fmt(r.top_and_random):>6} {_fmt(r.random_only):>6} "
            f"{_fmt(r.shuffled_control):>6} {_fmt(r.shuffled_gap):>6} {_fmt(r.score_after):>7}  {text}"
        )
    rows = [row for row in run.score_rows() if neurons is None or NeuronId(row["layer"], row["neuron"]) in set(neurons)]
    m = mean_scores(rows)
    share = share_above(df)
    lines.append("-" * len(head))
    lines.append(
        f"mean over {m['n_neurons']} scored neurons: score {_fmt(m['top_and_random'])}, random only {_fmt(m['random_only'])}, "
        f"shuffled control {_fmt(m['shuffled_control'])}, gap {_fmt(m['shuffled_gap'])}; "
        f"above 0.8: {share['above']} of {share['n']}"
    )
    after = df["score_after"].dropna()
    if len(after):
        before = df.loc[after.index, "score_before"]
        lines.append(f"revision: {len(after)} neurons, mean {_fmt(before.mean())} -> {_fmt(after.mean())}")
    return "\n".join(lines)
