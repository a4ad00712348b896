"""Vision-language interface: one image + a prompt in, one line of text out, in batches or as a stream.

Stage-A depends only on the types here. Backends: `resources.vlm.transformers_backend` (Qwen3-VL via
transformers, CPU or GPU), `resources.vlm.vllm_backend` (vLLM offline engine, GPU only) and
`resources.vlm.openai_backend` (an OpenAI-compatible server such as `vllm serve`). `VLMResource` in
`resources.vlm.resource` picks one from config.

Two shapes of backend: every backend batches (`generate`: a list in, a list out, in order); a backend
that talks to a server also streams (`StreamingVisionModel.stream`: answers come back as they
finish, from a bounded pool of requests in flight), so the caller can save each one at once and the
number of requests in flight does not depend on any batch size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

MIN_MAX_PIXELS = 32 * 32  # one Qwen3-VL visual token (16 px patches merged 2x2)
DTYPES = ("auto", "float32", "float16", "bfloat16")  # weight dtypes the local backends accept


@dataclass(frozen=True)
class VisionPrompt:
    image_path: str
    system: str
    user: str
    # Image budget: the image is scaled down (aspect kept) to at most this many pixels before the model
    # sees it. None = the backend's own default (the processor's saved setting, or the server's).
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < MIN_MAX_PIXELS:
            raise ValueError(
                f"max_pixels must be >= {MIN_MAX_PIXELS} (one visual token) or None, got {self.max_pixels}"
            )


@dataclass(frozen=True)
class VisionDecode:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy: the setting for regression comparisons
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VisionOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass(frozen=True)
class StreamedResult:
    """One finished request of a stream: an output, or the error that remained after the retries."""

    index: int  # position of the prompt in the input sequence
    output: VisionOutput | None
    error: str | None
    seconds: float  # this request's latency, retries included

    def __post_init__(self) -> None:
        if (self.output is None) == (self.error is None):
            raise ValueError(f"prompt #{self.index}: exactly one of output and error must be set")


class VLMRequestError(RuntimeError):
    """Some requests still failed after the retries; `failures` lists (image_path, error) for each."""

    def __init__(self, failures: list[tuple[str, str]], total: int):
        self.failures = failures
        super().__init__(f"{len(failures)} of {total} VLM requests failed, first: {failures[0]}")


@runtime_checkable
class VisionLanguageModel(Protocol):
    @property
    def fingerprint(self) -> str:
        """Identifies weights + dtype; part of the resume key, so a new model re-summarises."""

    @property
    def note(self) -> str:
        """A caveat shown with every output (e.g. that this is a random smoke model), or ''."""

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]:
        """Outputs in input order; raises `VLMRequestError` (or the engine's error) if any prompt failed."""


@runtime_checkable
class StreamingVisionModel(VisionLanguageModel, Protocol):
    @property
    def max_in_flight(self) -> int:
        """How many requests the stream keeps in flight at most."""

    def stream(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> Iterator[list[StreamedResult]]:
        """One `StreamedResult` per prompt, in the order they finish, in lists: each list holds what
        finished since the previous one (at least one result). A failed request is a result, not a raise."""
