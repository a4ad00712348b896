"""Chat LLM interface: a batch of conversations + decode params -> completions with token counts.

Stage-B, distillation and FastDistill code depends only on `ChatLLM`, `DecodeParams`,
`OutputConstraint` and `Completion`. Backends (transformers incl. GGUF, OpenAI-compatible HTTP, vLLM)
live in their own modules and are chosen in one place by `LLMResource` in `resources/llm/resource.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Conversation = Sequence[Message]


@dataclass(frozen=True)
class OutputConstraint:
    """One output language, written in each form an engine family applies; a backend uses the form it
    understands and raises ValueError when the constraint lacks it, never decoding unconstrained.

    - `regex`: the completion matches it in full (vLLM / SGLang structured outputs, vLLM offline).
    - `gbnf`: a GBNF grammar of the same language (llama.cpp in-process and llama.cpp server).
    - `prefixes` + `line_start`: the transformers backend forces one of `prefixes` (chosen by the
      model's likelihood of each), then decodes one line, up to the first newline, whose first token
      must start with a character matching the regex `line_start` (no restriction when None).

    The caller states every form it has; the backends know no rule of the pipeline.
    """

    regex: str | None = None
    gbnf: str | None = None
    prefixes: tuple[str, ...] = ()
    line_start: str | None = None

    def __post_init__(self) -> None:
        if self.regex is None and self.gbnf is None and not self.prefixes:
            raise ValueError("an OutputConstraint needs at least one form: regex, gbnf or prefixes")
        if not isinstance(self.prefixes, tuple) or not all(isinstance(p, str) and p for p in self.prefixes):
            raise ValueError(f"prefixes must be a tuple of non-empty strings, got {self.prefixes!r}")
        if self.line_start is not None and not self.prefixes:
            raise ValueError("line_start constrains the line after a forced prefix: set prefixes too")

    def form(self, name: str, backend: str) -> str | tuple[str, ...]:
        """The form `name` ("regex", "gbnf" or "prefixes") that `backend` applies, or a ValueError
        naming what is missing."""
        value = getattr(self, name)
        if not value:
            raise ValueError(
                f"{backend} applies an OutputConstraint through its {name!r}, and this constraint "
                f"has none (it has: {[f for f in ('regex', 'gbnf', 'prefixes') if getattr(self, f)]})"
            )
        return value


@dataclass(frozen=True)
class DecodeParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    n: int = 1
    # Optional constrained decoding: the language the completion must belong to (`OutputConstraint`).
    constraint: OutputConstraint | None = None
    # Optional structured output: a JSON schema the completion must follow. The OpenAI-compatible
    # backend sends it as `response_format`; a backend that cannot follow one raises ValueError.
    json_schema: dict | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.json_schema is not None and self.constraint is not None:
            raise ValueError("set at most one of constraint and json_schema: a completion follows one constraint")
        if self.constraint is not None and not isinstance(self.constraint, OutputConstraint):
            raise ValueError(f"constraint must be an OutputConstraint, got {type(self.constraint).__name__}")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise ValueError(f"json_schema must be a dict (a JSON schema), got {type(self.json_schema).__name__}")

    def as_dict(self) -> dict:
        # An unconstrained decode records `regex: None` as it did before `OutputConstraint`, so the keys
        # built from it (FastDistill's decode profile) stay valid.
        out = asdict(self)
        constraint = out.pop("constraint")
        return {**out, "regex": None} if constraint is None else {**out, "constraint": constraint}


@dataclass(frozen=True)
class Completion:
    """One sampled answer. A failed request has `text=None`, `finish_reason="error"` and `error` set;
    callers must treat it as failed, never as an empty answer."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    latency_s: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@runtime_checkable
class ChatLLM(Protocol):
    """`chat` returns, for each conversation, `params.n` completions in order."""

    @property
    def fingerprint(self) -> str: ...

    def chat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]: ...
