"""Run configs of the preference/RL student assets (`dpo_checkpoint`, `grpo_checkpoint`).

Flat dataclasses (the Dagster run config is derived from them with `qc_assets/run_config.py`): the
shared LoRA / optimiser / eval fields live once in `StudentRunConfig`, each method adds its own.
Device and dtype are not here: the student-training resource owns them (QC_DEVICE / QC_DTYPE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qc_assets.student.config import DEFAULT_PROJECTIONS, GUIDANCE_CHOICES, EvalGateConfig


def _positive_ints(obj, names, prefix: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{prefix}.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class StudentRunConfig:
    guidance: str = field(default="best", metadata={
        "help": "Stage-B guidance for prompts and eval: best (fail if a mission has none) or initial"})
    last_k: int = field(default=2, metadata={"help": "LoRA on the language model's last K blocks"})
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    projections: tuple[str, ...] = field(default=DEFAULT_PROJECTIONS, metadata={"help": "adapted projections"})
    max_steps: int = field(default=2, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=2, metadata={"help": "rows per device batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warmup share before cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    activation_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward"})
    seed: int = field(default=0, metadata={"help": "seeds LoRA init, sampling, data order, split and bootstrap"})
    eval_max_groups: int = field(default=0, metadata={"help": "held-out groups per mission evaluated; 0 = all"})
    eval_stage_a_images: int = field(default=4, metadata={"help": "held-out photos per mission for Stage-A"})
    eval_max_new_tokens: int = field(default=32, metadata={"help": "greedy decode budget per eval answer"})

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCE_CHOICES:
            raise ValueError(f"guidance must be one of {GUIDANCE_CHOICES}, got {self.guidance!r}")
        _positive_ints(self, ("last_k", "r", "alpha", "max_steps", "batch_size", "grad_accum"), "student")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not self.projections:
            raise ValueError("projections must name at least one projection, e.g. q_proj")
        self.eval_config()

    def eval_config(self) -> EvalGateConfig:
        return EvalGateConfig(max_groups=self.eval_max_groups, stage_a_images=self.eval_stage_a_images,
                              max_new_tokens=self.eval_max_new_tokens)


@dataclass(frozen=True)
class GRPORunConfig(StudentRunConfig):
    # the GRPO proposal (seed 003): LLM-only LoRA on the last 4 blocks, rewards label 1.0 / format 0.2
    last_k: int = field(default=4, metadata={"help": "LoRA on the language model's last K blocks"})
    label_weight: float = field(default=1.0, metadata={"help": "reward for a well-formed verdict equal to the label"})
    format_weight: float = field(default=0.2, metadata={
        "help": "reward for a well-formed two-line answer whose reason copies no summary"})
    num_generations: int = field(default=2, metadata={"help": "completions per prompt (the GRPO group)"})
    max_completion_length: int = field(default=24, metadata={"help": "tokens per sampled completion"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; 0 = no reference model (cheaper)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_ints(self, ("max_completion_length",), "grpo")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares completions), got {self.num_generations}")
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_generations "
                             f"{self.num_generations}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampled rollouts, got {self.temperature}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        for name in ("label_weight", "format_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DPORunConfig(StudentRunConfig):
    beta: float = field(default=0.1, metadata={"help": "DPO temperature: how far the policy may move from the base"})
    max_length: int = field(default=1024, metadata={"help": "prompt + answer tokens kept per pair"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_ints(self, ("max_length",), "dpo")
        if not self.beta > 0:
            raise ValueError(f"DPO beta must be > 0, got {self.beta}")
