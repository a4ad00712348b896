"""Chat LLM interface: a batch of conversations + decode params -> completions with token counts.

Stage-B, distillation and FastDistill code depends only on `ChatLLM`, `DecodeParams` and
`Completion`. Backends (transformers incl. GGUF, OpenAI-compatible HTTP, vLLM) live in their own
modules and are chosen in one place by `LLMResource` in `resources/llm/resource.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Conversation = Sequence[Message]


@dataclass(frozen=True)
class DecodeParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    n: int = 1
    # Optional constrained decoding: a regex the completion must match (engines that support it).
    regex: str | None = None
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
        if self.json_schema is not None and self.regex is not None:
            raise ValueError("set at most one of regex and json_schema: a completion follows one constraint")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise ValueError(f"json_schema must be a dict (a JSON schema), got {type(self.json_schema).__name__}")

    def as_dict(self) -> dict:
        return asdict(self)


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
