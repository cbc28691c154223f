"""The main job behind `nxkit run`: collection, explanation, simulation and scoring with the shuffled control,
revision, and the report, into one run directory.

`PipelineConfig` composes the stage configs (`CollectConfig`, `ExplainConfig`, `SimulateConfig`,
`ReviseConfig`) without renaming their fields; the command line is generated from it. Every stage
resumes: a finished collection is reused, finished neurons are skipped, a stopped run picks up where
it was. The settings are saved in the run manifest under `pipeline`.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from . import files
from .collection.collect import CollectConfig
from .explainers import SEARCH
from .explainers.base import ExplainConfig
from .explainers.search import SearchConfig
from .llm.batch import BatchRound
from .records import NEGATIVE, POSITIVE, SAMPLE, SELECTIVE, CollectionManifest, Component, NeuronId
from .revise import ReviseConfig
from .runs import Run
from .selection import PipelineError, most_selective, parse_neurons, select_neurons  # noqa: F401 (re-exported)
from .simulators.prompted import SimulateConfig

BOTH = "both"
SIDES = {POSITIVE: [POSITIVE], NEGATIVE: [NEGATIVE], BOTH: [POSITIVE, NEGATIVE]}


_DEFERRED: list[bool] = []
"""Non-empty while the command line is parsed: the configs' checks run after parsing (`deferred_checks`)."""


@contextmanager
def deferred_checks():
    """Build configs without checking them (the caller calls `check()`): how `nxkit` turns a bad flag into one line
    rather than the argument parser's box."""
    _DEFERRED.append(True)
    try:
        yield
    finally:
        _DEFERRED.pop()


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A run name: a plain folder name under runs/ (no separators, no `..`)."""


def check_corpus_spec(spec: str) -> None:
    """Fail early, naming the fix, on a corpus that cannot be read (before a model is loaded)."""
    from .collection.corpus import SOURCES

    if spec in ("default", "fortunes", "pydoc"):
        return
    if spec.startswith("hf:"):
        if len(spec) <= 3 or any(not part for part in spec[3:].split(":")[:1]):
            raise PipelineError(
                f"corpus {spec!r}: write hf:DATASET[:CONFIG][:SPLIT], e.g. hf:wikitext:wikitext-2-raw-v1"
            )
        return
    if spec.endswith((".txt", ".jsonl")):
        if not Path(spec).is_file():
            raise PipelineError(f"corpus file {spec} does not exist; give the path of a .txt or .jsonl file")
        return
    raise PipelineError(f"unknown corpus {spec!r}; choose one of: {', '.join(SOURCES)}")


def check_base_url(name: str, urls: str | list[str] | None) -> None:
    """A server URL must be http(s)://HOST[:PORT]/...; anything else is named before a request is made. Several URLs
    (replicas of one model), or `@FILE` of them, are each checked."""
    if urls is None:
        return
    from .llm.base import LLMError
    from .llm.server import endpoint_urls

    try:
        every = endpoint_urls(urls)
    except LLMError as exc:
        raise PipelineError(f"{name}: {exc}") from exc
    for url in every:
        _check_one_url(name, url)


def _check_one_url(name: str, url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        from .llm.base import redact_url

        raise PipelineError(
            f"{name} {redact_url(url)!r} is not a server URL; write http(s)://HOST[:PORT]/v1, e.g. "
            "http://127.0.0.1:8000/v1"
        )


@dataclass
class SourceConfig:
    """Where a run lives and what it is collected from: the subject model and the corpus."""

    name: str = "demo"
    """Run name: results go to runs/NAME."""
    run_dir: str | None = None
    """Explicit run directory (overrides the name)."""
    model: str = "smollm2-135m"
    """Subject model: the offline default, or a TransformerLens / Hugging Face name (needs a hub)."""
    corpus: str = "default"
    """Corpus: default | fortunes | pydoc | hf:NAME[:CONFIG][:SPLIT] | FILE.txt | FILE.jsonl."""
    max_tokens: int = 200_000
    """Corpus tokens to collect over."""
    window: int = 64
    """Tokens per window."""
    seed: int = 0
    """Seed of the corpus windows' order and of the neuron sample."""
    device: str | None = None
    """cpu | cuda (None: cuda when available)."""
    subject_init: Literal["trained", "random"] = "trained"
    """`random` re-initialises the subject model (the same architecture, every weight drawn anew under
    `subject_init_seed`): the whole method on a network that learnt nothing, the baseline a score must beat."""
    subject_init_seed: int = 0
    """Seed of the random re-initialisation."""

    def __post_init__(self):
        if not _DEFERRED:
            self.check()

    def check(self) -> None:
        """Fail on settings that cannot work, naming the fix (`nxkit` calls it after parsing, for a one-line error)."""
        if self.max_tokens < self.window or self.window < 2:
            raise PipelineError(f"max_tokens ({self.max_tokens}) must be >= window ({self.window}) >= 2")
        if self.run_dir is None and not RUN_NAME.fullmatch(self.name or ""):
            raise PipelineError(
                f"run name {self.name!r} is not a plain name (letters, digits, '.', '_' and '-', starting with a letter "
                "or digit); it names a folder under runs/. For a run elsewhere, give its path with --run-dir"
            )
        check_corpus_spec(self.corpus)

    @property
    def path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


@dataclass
class PipelineConfig:
    """Everything `nxkit run` does, in one place (saved in the run manifest)."""

    source: SourceConfig = field(default_factory=SourceConfig)
    """The run directory, subject model and corpus."""
    collect: CollectConfig = field(default_factory=CollectConfig)
    """Collection settings (layers, windows kept per neuron, batch size)."""
    writes: bool = True
    """After collecting, store what every neuron writes to the logits (its output weights through the final norm and
    the unembedding: the tokens it raises and lowers most), shown by `nxkit top`, the summary and the report; a few
    matrix products per layer (SmolLM2's 30 layers: about a minute on 2 CPU cores)."""
    explain_layers: list[int] | None = None
    """Layers whose neurons are explained (None: every collected layer)."""
    neurons: list[str] | None = None
    """Neurons to explain: `N` (that index in every explained layer) or `L:N`; None samples `sample` per layer."""
    sample: int = 2
    """Neurons sampled per layer (uniformly, with the source's seed) when `neurons` is None: group `sample`, whose
    scores are the kit's average."""
    selective: int = 0
    """Also explain this many of each layer's most selective neurons (highest excess kurtosis over the corpus, not in
    the sample): group `selective`, kept apart from the sample in every figure and mean (a chosen group's scores are
    not the kit's average)."""
    explainer: str = SEARCH
    """`search` (compositional search over words, WordNet concepts, surface and context: no LLM), `local` (the
    offline SmolLM2 prompted, smoke-level) or a model name on an OpenAI-compatible server."""
    simulator: str | None = None
    """`nxkit-sim` (nxkit's trained simulator), `local` (the prompted SmolLM2), or a model name on a server; None
    uses the explainer's model, except that the offline `local` explainer's texts are scored by nxkit-sim (the
    prompted SmolLM2 ignores explanations), and `search`'s formulas are simulated exactly."""
    base_url: list[str] | None = None
    """OpenAI-compatible server of the explainer (None: $OPENAI_BASE_URL or OpenAI's API). Several URLs (or `@FILE`,
    one URL per line) are replicas of one model: each request goes to the least busy, one that fails rests and the
    request goes to another."""
    simulator_base_url: list[str] | None = None
    """Server(s) of the simulator (None: `base_url`)."""
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    """Explanation and scoring settings (best-of-k, windows)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """Compositional-search settings (used with `--explainer search`)."""
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    """Simulator settings (mode, top log-probabilities)."""
    sign: Literal["positive", "negative", "both"] | None = None
    """Sides of each neuron to explain, each scored as its own unit (the negative side on the negated activations).
    None: both for subject models with gated MLPs (SmolLM2, Llama, Qwen, Gemma: their neurons fire as strongly
    negative as positive), positive for the others (GELU: its negative side is bounded near -0.17)."""
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    """Counterexample revision settings (rounds: 0 skips revision)."""
    max_concurrency: int = 64
    """Requests in flight at once to each LLM server (enough to keep a vLLM deployment busy); neurons in progress
    are bounded by `--explain.max-neurons-in-flight`."""
    max_requests: int | None = None
    """Stop cleanly (resumable) once this invocation sent this many LLM requests (None: no limit). Checked before
    each neuron starts: the neurons already in flight finish, so it may overshoot by their requests."""
    max_tokens_spent: int | None = None
    """The same for prompt and completion tokens spent (None: no limit)."""
    retry_failed: bool = False
    """Try neurons whose explanation or revision failed before again."""
    report: bool = True
    """Write runs/<name>/report.html at the end."""
    baseline: str | None = None
    """A run directory to compare with (a `--subject-init random` run of the same method, say): its scores are
    printed and drawn beside this run's, with the difference of means and its interval."""
    batch_out: str | None = None
    """Write the LLM requests each stage would send (those the response cache lacks) to this folder as OpenAI Batch
    API files, and stop; `nxkit cache import` reads their answers into the cache and the same command goes on to the
    next stage (one round of files per stage)."""
    progress: bool = True
    """Progress bars and stage headers."""

    def __post_init__(self):
        if not _DEFERRED:
            self.check()

    def check(self) -> None:
        """Fail on settings that cannot work, naming the fix (`nxkit` calls it after parsing, for a one-line error)."""
        self.source.check()
        if self.sample < 1 and not self.neurons:
            raise PipelineError("sample must be >= 1 when no neurons are listed; or list them with --neurons")
        if self.selective < 0:
            raise PipelineError(f"selective must be >= 0 (neurons per layer), got {self.selective}")
        parse_neurons(self.neurons or [], [0])  # validates the syntax early
        if self.max_concurrency < 1:
            raise PipelineError("max_concurrency must be >= 1")
        for name in ("max_requests", "max_tokens_spent"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise PipelineError(f"{name} must be None or >= 1, got {value}")
        check_base_url("base_url", self.base_url)
        check_base_url("simulator_base_url", self.simulator_base_url)
        if self.explain_layers is not None and any(layer < 0 for layer in self.explain_layers):
            raise PipelineError(f"explain_layers {self.explain_layers}: layers are numbered from 0")
        if self.sign is not None and self.sign not in SIDES:
            raise PipelineError(f"sign must be positive, negative or both (or None: automatic), got {self.sign!r}")


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
    smoke_level: bool = False
    """True when the explainer or simulator is a smoke-level model (its scores say little)."""
    batch: BatchRound | None = None
    """With `batch_out`: the batch files this call wrote before it stopped (None: nothing was left to ask)."""


def make_llms(config: PipelineConfig):
    """The explainer and the simulator from the config (one backend serves both when they name the same model on the
    same server). Each LLM checks its server first, so an unreachable server or an unknown model fails before any
    work. The search explainer needs no LLM; with no `simulator` its formulas are simulated exactly."""
    from .explainers import make_explainer
    from .llm.base import run_sync
    from .simulators import simulator_for

    server = {"max_concurrency": config.max_concurrency}
    explainer = make_explainer(config.explainer, config.search, base_url=config.base_url, **server)
    simulator = simulator_for(
        config.explainer, explainer.llm, config.simulator, config.simulate,
        base_url=config.simulator_base_url or config.base_url, explainer_base_url=config.base_url, **server,
    )  # fmt: skip
    llms = {id(c.llm): c.llm for c in (explainer, simulator) if c.llm is not None}.values()
    if config.batch_out:
        from .llm.batch import attach

        attach(llms, config.batch_out)
    for llm in llms:
        run_sync(llm.check())
    return explainer, simulator


class _Stages:
    """Stage headers and wall times of one run."""

    def __init__(self, n: int, progress: bool):
        self.n, self.i, self.progress, self.seconds = n, 0, progress, {}

    def start(self, name: str, text: str) -> None:
        self.i += 1
        self.name, self.t0 = name, time.perf_counter()
        files.STAGE = name  # what the crash harness's census says of each write
        if self.progress:
            print(f"\n[{self.i}/{self.n}] {text}", flush=True)

    def stop(self) -> None:
        self.seconds[self.name] = time.perf_counter() - self.t0


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run (or resume) every stage; returns what was done. Prints a stage header and progress for each."""

    from .collection.distributed import other_rank

    run = Run(config.source.path)
    if other_rank():  # under torchrun, ranks above 0 collect their shares and stop; rank 0 holds the run
        prepare_collection(config, run)
        return PipelineResult(run, [], {}, None, False)
    with run.lock():  # a second process on this run stops at once; a crashed one's half-done writes are finished
        return _run_pipeline(config, run)


def _run_pipeline(config: PipelineConfig, run: Run) -> PipelineResult:
    from .explain_score import shuffled_controls

    revise = bool(config.revise.rounds) and config.explainer != SEARCH
    stages = _Stages(4 + revise, config.progress)
    explainer, simulator = make_llms(config)  # fails before the collection when a server is unreachable

    src = config.source
    stages.start("collection", f"collection: {src.model} over {src.max_tokens:,} tokens of '{src.corpus}'")
    model = prepare_collection(config, run)
    neurons = choose_neurons(config, run)
    stages.stop()

    sides = [run.side(sign) for sign in choose_sides(config, run)]
    todo = sum(len(side.todo(neurons, config.retry_failed)) for side in sides)
    which = " and ".join(side.sign for side in sides)
    stages.start(
        "explain+score",
        f"explanation and scoring, {which} side{'s' * (len(sides) > 1)}: {todo} of {len(neurons) * len(sides)} "
        f"neuron sides to do (best of {config.explain.best_of})",
    )
    from .explain_score import Budget, _sum_usage

    budget, start = Budget(config.max_requests, config.max_tokens_spent), _sum_usage(explainer.usage, simulator.usage)
    manifest = run.collection_manifest()
    subject = None
    if manifest is not None:
        from .collection.subject import SubjectLoader

        subject = SubjectLoader.of(manifest, src.device, model)
    stopped = explain_sides(config, sides, neurons, explainer, simulator, subject)
    model = model if subject is None else subject.loaded  # the ablation score may have loaded it
    stages.stop()
    if batch := _batch_round(explainer, simulator, "explain+score"):
        return PipelineResult(run, neurons, stages.seconds, batch=batch)

    stages.start(
        "shuffled control", "shuffled-explanation control (each neuron scored with another neuron's explanation)"
    )
    for side in sides:  # a side's control takes an explanation of the same side
        shuffled_controls(side, simulator, neurons=neurons, seed=config.explain.seed, progress=config.progress)
    stages.stop()
    if batch := _batch_round(explainer, simulator, "shuffled control"):
        return PipelineResult(run, neurons, stages.seconds, batch=batch)

    if revise and stopped:
        print("revision skipped: the budget is spent", flush=True)
    elif revise:
        stages.start("revision", f"revision: {config.revise.rounds} round(s) of counterexamples per neuron side")
        for side in sides:
            left = budget.remaining(_sum_usage(explainer.usage, simulator.usage).minus(start))
            if left is None:
                print("revision stopped: the budget is spent; run the same command again to resume", flush=True)
                break
            model = revise_stage(config, side, model, explainer, simulator, neurons, left)
        stages.stop()
        if batch := _batch_round(explainer, simulator, "revision"):
            return PipelineResult(run, neurons, stages.seconds, batch=batch)
    elif config.revise.rounds and config.progress:
        print(
            "\nrevision skipped: the search explainer writes formulas, not prose an LLM revises; revise with an LLM "
            "explainer (--explainer local, or a model on a server)",
            flush=True,
        )

    files.STAGE = "compaction"
    for side in sides:
        side.compact_table()
    report = None
    if config.report:
        from .views.report import write_report

        stages.start("report", "report")
        report = write_report(run, baseline=config.baseline)
        stages.stop()
    run.update_manifest(pipeline_seconds={k: round(v, 1) for k, v in stages.seconds.items()})
    smoke = any(Component.of(c.describe()).smoke_level for c in (explainer, simulator))
    return PipelineResult(run, neurons, stages.seconds, report, smoke)


def _batch_round(explainer, simulator, stage: str):
    """In batch mode, the batch files of the requests this stage waits for (written now), else None."""
    out = next((c.llm.batch for c in (explainer, simulator) if getattr(c.llm, "batch", None) is not None), None)
    return out.write(stage) if out is not None and out.pending else None


def prepare_collection(config: PipelineConfig, run: Run):
    """Collect (or resume collecting) unless the run has a finished collection; returns the subject model when
    it was loaded (else None), after checking that the collection matches the config."""
    from .collection.corpus import make_windows
    from .collection.distributed import init_from_env, rank_device
    from .collection.subject import load_subject

    src, model = config.source, None
    rank, size = init_from_env()  # under torchrun: this rank collects its share of the windows
    if not run.has_collection():
        from .collection.collect import collect

        device = rank_device(src.device)
        model = load_subject(src.model, device=device, init=src.subject_init, init_seed=src.subject_init_seed)
        windows = make_windows(model.tokenizer, src.corpus, window=src.window, max_tokens=src.max_tokens, seed=src.seed)
        if config.progress and rank == 0:
            print(f"corpus: {windows.summary()}" + (f"; {size} ranks" if size > 1 else ""), flush=True)
        collect(model, windows, run.activations_dir, config.collect, progress=config.progress)
    elif config.progress and rank == 0:
        print(f"reusing the finished collection in {run.activations_dir}", flush=True)
    if rank > 0:
        return model  # the other stages run on rank 0 alone
    _check_same_collection(run.collection_manifest(), config, run)
    from .collection.output import has_writes, write_writes

    layers = run.collection_manifest().layers
    if config.writes and not has_writes(run.activations_dir, layers):  # also after a kill, or for an older collection
        if model is None:
            model = load_subject(src.model, device=src.device, init=src.subject_init, init_seed=src.subject_init_seed)
        write_writes(model, run.activations_dir, layers)
    run.update_manifest(pipeline=asdict(config))
    return model


def choose_sides(config: PipelineConfig, run: Run) -> list[str]:
    """The sides to explain: `config.sign`, or both for a gated-MLP subject model whose collection kept the most
    negative windows (the positive side alone otherwise, saying why)."""
    has_negative = run.activations().has_negative
    if config.sign is not None:
        if NEGATIVE in SIDES[config.sign] and not has_negative:
            raise PipelineError(
                f"--sign {config.sign}: the collection in {run.activations_dir} kept no most-negative windows; use "
                "--sign positive, or collect again under another run name (--collect.bottom-k 40)"
            )
        return SIDES[config.sign]
    if not run.collection_manifest().gated_mlp:
        return [POSITIVE]
    if not has_negative:
        if config.progress:
            print(
                "explaining the positive side only: this collection kept no most-negative windows (collect again under "
                "another run name to explain both sides)",
                flush=True,
            )
        return [POSITIVE]
    return [POSITIVE, NEGATIVE]


def explain_sides(
    config: PipelineConfig, sides: list[Run], neurons: list[NeuronId], explainer, simulator, subject=None
) -> str | None:
    """Explain and score every side in turn under one budget; returns why the run stopped early, if it did."""
    from .explain_score import Budget, _sum_usage, explain_and_score

    budget, start = Budget(config.max_requests, config.max_tokens_spent), _sum_usage(explainer.usage, simulator.usage)
    stopped = None
    for side in sides:
        spent = _sum_usage(explainer.usage, simulator.usage).minus(start)
        left = budget.remaining(spent)
        if left is None:
            stopped = budget.reached(spent)
            side.update_manifest(stopped=stopped)
        else:
            explain_and_score(
                side, neurons, explainer, simulator, config.explain, retry_failed=config.retry_failed,
                progress=config.progress, budget=left, subject=subject,
            )  # fmt: skip
            stopped = side.manifest().stopped
        if stopped:
            if config.progress:
                left_n = sum(len(s.todo(neurons, config.retry_failed)) for s in sides)
                print(
                    f"stopped: {stopped}; {left_n} neuron sides left. Run the same command again (with a larger "
                    "budget) to resume."
                )
            break
    return stopped


def choose_neurons(config: PipelineConfig, run: Run) -> list[NeuronId]:
    """The neurons to explain, checked against the collection, recorded in the manifest."""
    acts = run.activations()
    wanted = config.collect.layers
    if wanted and not set(wanted) <= set(acts.layers):
        raise PipelineError(
            f"{run.path} was collected for layers {acts.layers}, not {sorted(set(wanted) - set(acts.layers))}; "
            "use another run name for other layers"
        )
    layers = sorted(config.explain_layers or wanted or acts.layers)
    if not set(layers) <= set(acts.layers):
        raise PipelineError(
            f"--explain-layers {sorted(set(layers) - set(acts.layers))} were not collected (collected: {acts.layers}); "
            "choose collected layers, or collect them with --collect.layers"
        )
    neurons = select_neurons(layers, acts.d_mlp, config.neurons, config.sample, config.source.seed)
    selective = most_selective(acts, layers, config.selective, exclude=neurons)
    groups = {"listed" if config.neurons else SAMPLE: neurons, SELECTIVE: selective}
    neurons = sorted(neurons + selective)
    run.update_manifest(
        neurons=[[n.layer_index, n.neuron_index] for n in neurons],
        groups={g: [[n.layer_index, n.neuron_index] for n in ns] for g, ns in groups.items() if ns},
    )
    return neurons


def revise_stage(config: PipelineConfig, run: Run, model, explainer, simulator, neurons: list[NeuronId], budget=None):
    """Counterexample revision of every chosen neuron not revised yet, on the run's side (the subject model loads
    only if needed); returns the subject model, when loaded."""
    from .collection.subject import load_subject
    from .revise import pending, revise_run

    if model is None and pending(run, neurons, config.retry_failed):
        src = config.source
        model = load_subject(src.model, device=src.device, init=src.subject_init, init_seed=src.subject_init_seed)
    revise_run(
        run, model, explainer.llm, simulator, config.revise, neurons=neurons, progress=config.progress,
        retry_failed=config.retry_failed, budget=budget,
    )  # fmt: skip
    return model


def _check_same_collection(manifest: CollectionManifest, config: PipelineConfig, run: Run) -> None:
    """A resumed run must describe the same subject model and corpus as its collection."""
    from .offline import OFFLINE_ALIASES, OFFLINE_DEFAULT

    src = config.source
    want = OFFLINE_DEFAULT if src.model in OFFLINE_ALIASES else src.model
    have = (manifest.model, manifest.corpus_source)
    if have != (want, src.corpus):
        raise PipelineError(
            f"{run.path} was collected with model {have[0]!r} on corpus {have[1]!r}, not {want!r} on {src.corpus!r}; "
            "choose another run name (--name), or delete that run directory to start over"
        )
    init = "trained" if src.subject_init == "trained" else f"random:{src.subject_init_seed}"
    if manifest.subject_init != init:
        raise PipelineError(
            f"{run.path} was collected from the subject model's {manifest.subject_init!r} weights, not {init!r}; a "
            "random-network baseline needs a run of its own (another --name)"
        )
