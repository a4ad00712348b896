"""A trained student: the peft model over the base weights, and what training reported.

Its own module so that the DPO/GRPO trainers (`preference`) and the backend that calls them
(`student`) all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from resources.training.trl_common import adapter_size_bytes


@dataclass
class StudentSession:
    """A trained peft model over the student's weights, plus what training reported."""

    model: object
    processor: object
    base_path: str
    targets: list[str]
    losses: list[float]
    trainable_params: int
    total_params: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def generator(self, adapter: bool):
        """Greedy chat generator; `adapter=False` = the base weights (LoRA disabled)."""
        from resources.training.sft_vl import StudentGenerator

        return StudentGenerator(self.model, self.processor, adapter=adapter)

    def save_adapter(self, out_dir: Path) -> int:
        self.model.save_pretrained(str(out_dir))
        return adapter_size_bytes(out_dir)

    def save_merged(self, out_dir: Path) -> Path:
        """Merge the adapter into the weights (this ends the session's use for base-vs-student evals)."""
        from resources.training.sft_vl import save_merged

        return save_merged(self.model, self.base_path, out_dir)
