"""What a run records of its components, their traffic and its settings: usage, component descriptions and the
manifests of a run and of its collection."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .release import register

# --- what runs record of their components and traffic ------------------------------------------


@register
@dataclass
class Usage:
    """Counters of one backend's traffic (a run sums them into its manifest)."""

    requests: int = 0
    """Requests actually computed (sent to a server, or forward passes run locally)."""
    prompt_tokens: int = 0
    """Prompt tokens processed."""
    completion_tokens: int = 0
    """Tokens generated."""
    cache_hits: int = 0
    """Responses served from the on-disk cache (nothing sent)."""
    reused_prompt_tokens: int = 0
    """Prompt tokens whose keys and values were reused from a shared prefix (local backend)."""
    retries: int = 0
    """Requests sent again after a rate limit, a server error, a timeout or a malformed answer."""
    malformed: int = 0
    """Answers with status 200 that could not be read (not JSON, the wrong shape): retried, never cached."""

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def add(self, **amounts: int) -> None:
        """Add `amounts` (counter name -> how many) to these counters."""
        for k, v in amounts.items():
            setattr(self, k, getattr(self, k) + v)

    def reset(self) -> None:
        for k in dataclasses.asdict(self):
            setattr(self, k, 0)

    def minus(self, before: Usage) -> Usage:
        """The traffic since `before` (an earlier snapshot of the same counters)."""
        return Usage(**{k: v - getattr(before, k) for k, v in dataclasses.asdict(self).items()})

    @classmethod
    def of(cls, value: Usage | dict | None) -> Usage:
        """A usage from a record or a plain dict (summaries and manifests written before usage was typed)."""
        if isinstance(value, Usage):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in (value or {}).items() if k in known and v is not None})

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together (what a budget counts)."""
        return self.prompt_tokens + self.completion_tokens


@register
@dataclass
class Component:
    """What a run records of an explainer or a simulator, so that "has it changed" is a field comparison. Never
    holds a key."""

    kind: str = "unknown"
    """`llm` (a backend), `prompted` (an LLM reading a simulation prompt), `trained` (nxkit-sim), `exact` (the search's
    formulas), `search` (the compositional-search explainer), or what a user's own component calls itself."""
    mode: str | None = None
    """A simulator's mode (`all_at_once`, `chat_logprobs`, `chat_text`, `exact`)."""
    model: str | None = None
    """The model's name."""
    backend: str | None = None
    """The backend that serves it (`openai`, `local`)."""
    base_url: str | None = None
    """The server's address, for a backend on one."""
    path: str | None = None
    """Where trained weights were loaded from (None: the shipped ones)."""
    weights_hash: str | None = None
    """SHA-256 of trained weights, so a changed file counts as another simulator."""
    smoke_level: bool = False
    """True for a model whose scores say little (the offline prompted SmolLM2)."""
    settings: dict[str, Any] | None = None
    """Its own settings (e.g. the search's), and anything else a component's description held."""

    @classmethod
    def of(cls, value: Component | dict | None) -> Component | None:
        """A description from a record or a plain dict (what a user's component, or an older run, wrote)."""
        if value is None or isinstance(value, Component):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"a component description is a Component or a dict, not {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        out = {k: v for k, v in value.items() if k in known}
        extra = {k: v for k, v in value.items() if k not in known and k not in ("settings", "dataclass_name")}
        if "kind" not in out:
            out["kind"] = "llm" if "backend" in value else "unknown"
        settings = {**(value.get("settings") or {}), **extra}
        return cls(**out, settings=settings or None)

    @property
    def label(self) -> str:
        """In a word or two: `exact`, `trained nxkit-sim`, `prompted all_at_once`."""
        detail = self.model if self.kind == "trained" else self.mode
        return " ".join(str(x) for x in (self.kind, detail if detail != self.kind else None) if x)


@register
@dataclass
class StageRecord:
    """What a stage of a run recorded: its settings and the components it ran with."""

    config: dict[str, Any] = field(default_factory=dict)
    """The stage's settings (its config dataclass, as given)."""
    explainer: Component | None = None
    """The explainer."""
    simulator: Component | None = None
    """The simulator."""

    def __post_init__(self):
        self.explainer, self.simulator = Component.of(self.explainer), Component.of(self.simulator)


SAMPLE, SELECTIVE, LISTED = "sample", "selective", "listed"
"""The groups a run's neurons are chosen in (`RunManifest.groups`); a chosen group's scores are never pooled with the
sample's."""


@register
@dataclass
class RunManifest:
    """A run's `manifest.json`: what each stage ran with, what it spent, where it stopped."""

    pipeline: dict[str, Any] | None = None
    """`nxkit run`'s settings as given (source, collect, explain, simulate, revise and the rest)."""
    neurons: list[list[int]] | None = None
    """The neurons chosen, `[layer, neuron]`."""
    groups: dict[str, list[list[int]]] | None = None
    """How they were chosen, group -> `[layer, neuron]`: `sample` (uniform per layer: the kit's average), `selective`
    (most selective by the collection's moments), `listed` (named by the user); None: all `sample`."""
    explain: StageRecord | None = None
    """The explain-and-score stage."""
    revise: StageRecord | None = None
    """The revision stage."""
    usage: Usage | None = None
    """LLM traffic of the last explain-and-score call."""
    stopped: str | None = None
    """Why the last call stopped early (a budget), None when it did not."""
    endpoints: dict[str, Usage] | None = None
    """The traffic per server (credentials redacted) of the last explanation call's backends, since they started:
    how a model on several replicas shared the work. None without a server."""
    pipeline_seconds: dict[str, float] | None = None
    """Wall time per stage of the last `nxkit run`."""

    def __post_init__(self):
        for name in ("explain", "revise"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(
                    self, name, StageRecord(**{k: v for k, v in value.items() if k in StageRecord.__dataclass_fields__})
                )
        if self.usage is not None:
            self.usage = Usage.of(self.usage)
        if self.endpoints is not None:
            self.endpoints = {url: Usage.of(u) for url, u in self.endpoints.items()}

    @classmethod
    def from_json_obj(cls, obj: dict) -> RunManifest:
        """From `manifest.json`, whether written typed or as the plain dict of an older version."""
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@register
@dataclass
class CollectionManifest:
    """A collection's `manifest.json`: what identifies the pass (model, layers, settings, corpus) and its progress."""

    format_version: int = 1
    model: str = "?"
    """The subject model's name."""
    n_layers: int = 0
    d_mlp: int = 0
    layers: list[int] = field(default_factory=list)
    """The layers collected."""
    config: dict[str, Any] = field(default_factory=dict)
    """The collection's settings (`CollectConfig`, `bottom_k` resolved)."""
    corpus: dict[str, Any] = field(default_factory=dict)
    """The corpus: source, n_windows, window, n_tokens, n_documents."""
    quantile_calibration_windows_used: int = 0
    gated_mlp: bool | None = None
    """True for act(gate) x up MLPs (None: collected before nxkit recorded it)."""
    subject_init: str = "trained"
    """`trained`, or `random:SEED` for the subject model re-initialised (a network that learnt nothing)."""
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions."""
    status: str = "partial"
    """`partial` or `complete`."""
    done_windows: int = 0
    """Windows done so far."""

    @classmethod
    def from_json_obj(cls, obj: dict) -> CollectionManifest:
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})

    def identity(self) -> tuple:
        """What a resumed pass must share with the pass it resumes: every field but versions and progress (a field
        added later counts unless it is named here)."""
        progress = {"versions", "status", "done_windows"}
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in progress)

    @property
    def corpus_source(self) -> str | None:
        return self.corpus.get("source")

    @property
    def n_tokens(self) -> int:
        return int(self.corpus.get("n_tokens", 0))

    @property
    def quantile_levels(self) -> list[float] | None:
        return self.config.get("quantile_levels")
