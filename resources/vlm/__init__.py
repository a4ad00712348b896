"""Vision-language interface: one image + a prompt in, one line of text out, in batches.

Stage-A depends only on `VisionLanguageModel`, `VisionPrompt`, `VisionDecode` and `VisionOutput`.
Backends: `resources.vlm.transformers_backend` (Qwen3-VL via transformers, CPU or GPU) and
`resources.vlm.vllm_backend` (vLLM offline engine, GPU only). `VLMResource` in `resources.vlm.resource`
picks one from config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class VisionPrompt:
    image_path: str
    system: str
    user: str


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


@runtime_checkable
class VisionLanguageModel(Protocol):
    @property
    def fingerprint(self) -> str:
        """Identifies weights + dtype; part of the resume key, so a new model re-summarises."""

    @property
    def note(self) -> str:
        """A caveat shown with every output (e.g. that this is a random smoke model), or ''."""

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]: ...
