"""Run configs of the preference/RL student assets (`dpo_checkpoint`, `grpo_checkpoint`).

The Dagster run config is derived from these dataclasses (`qc_assets/run_config.py`): the LoRA and
optimiser settings are the nested `lora` block (`resources.training.spec.LoraTrainingSpec`, shared
with SFT and FastDistill), the eval budget and guidance live once in `PreferenceRunConfig`, and each
method adds its own fields. `lora.seed` is the run's one seed: LoRA init, sampling, data order, the
held-out split and the bootstrap. Device and dtype are not here: the student-training resource owns
them (QC_DEVICE / QC_DTYPE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qc_assets.student.config import GUIDANCE_CHOICES, EvalGateConfig
from resources.training.spec import LoraTrainingSpec


def _positive_ints(obj, names, prefix: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{prefix}.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class PreferenceRunConfig:
    guidance: str = field(
        default="best",
        metadata={"help": "Stage-B guidance for prompts and eval: best (fail if a mission has none) or initial"},
    )
    lora: LoraTrainingSpec = field(
        default_factory=lambda: LoraTrainingSpec(max_steps=2, learning_rate=1e-4),
        metadata={"help": "LoRA and optimiser; lora.seed also seeds the split, sampling and bootstrap"},
    )
    eval_max_groups: int = field(default=0, metadata={"help": "held-out groups per mission evaluated; 0 = all"})
    eval_stage_a_images: int = field(default=4, metadata={"help": "held-out photos per mission for Stage-A"})
    eval_max_new_tokens: int = field(default=32, metadata={"help": "greedy decode budget per eval answer"})

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCE_CHOICES:
            raise ValueError(f"guidance must be one of {GUIDANCE_CHOICES}, got {self.guidance!r}")
        if not isinstance(self.lora, LoraTrainingSpec):
            raise ValueError(f"lora must be a LoraTrainingSpec, got {type(self.lora).__name__}")
        self.eval_config()

    @property
    def seed(self) -> int:
        """The run's one seed (`lora.seed`)."""
        return self.lora.seed

    def eval_config(self) -> EvalGateConfig:
        return EvalGateConfig(
            max_groups=self.eval_max_groups,
            stage_a_images=self.eval_stage_a_images,
            max_new_tokens=self.eval_max_new_tokens,
        )


@dataclass(frozen=True)
class GRPORunConfig(PreferenceRunConfig):
    # the GRPO proposal (seed 003): LLM-only LoRA on the last 4 blocks, rewards label 1.0 / format 0.2
    lora: LoraTrainingSpec = field(
        default_factory=lambda: LoraTrainingSpec(last_k=4, max_steps=2, learning_rate=1e-4),
        metadata={
            "help": "LoRA and optimiser (the proposal: last_k 4); lora.seed also seeds sampling, the split "
            "and bootstrap"
        },
    )
    label_weight: float = field(default=1.0, metadata={"help": "reward for a well-formed verdict equal to the label"})
    format_weight: float = field(
        default=0.2, metadata={"help": "reward for a well-formed two-line answer whose reason copies no summary"}
    )
    num_generations: int = field(default=2, metadata={"help": "completions per prompt (the GRPO group)"})
    max_completion_length: int = field(default=24, metadata={"help": "tokens per sampled completion"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; 0 = no reference model (cheaper)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_ints(self, ("max_completion_length",), "grpo")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares completions), got {self.num_generations}")
        if self.lora.batch_size % self.num_generations:
            raise ValueError(
                f"lora.batch_size {self.lora.batch_size} must be a multiple of num_generations {self.num_generations}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampled rollouts, got {self.temperature}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        for name in ("label_weight", "format_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    def rollout(self) -> dict:
        """GRPOTrainer's sampling settings (the trainer resource takes them beside the LoRA spec)."""
        return {
            "num_generations": self.num_generations,
            "max_completion_length": self.max_completion_length,
            "beta": self.beta,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class DPORunConfig(PreferenceRunConfig):
    beta: float = field(default=0.1, metadata={"help": "DPO temperature: how far the policy may move from the base"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"DPO beta must be > 0, got {self.beta}")
