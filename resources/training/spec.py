"""`LoraTrainingSpec`: the LoRA and optimiser settings of every student trainer, declared once.

The VL student's SFT, DPO and GRPO (`student.py`, `sft_vl.py`, `preference.py`) and the text student
(`sft_text.py`, FastDistill) read the same fields; each stage's config nests one
(`lora: LoraTrainingSpec = field(default_factory=...)`) with its own defaults instead of repeating them.
Device, dtype and the base checkpoint are not here: the training resources own them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class LoraTrainingSpec:
    """LoRA adapters and the optimiser that trains them (TRL; warmup + cosine schedule)."""

    last_k: int = field(
        default=2, metadata={"help": "LoRA on the language model's last K decoder blocks; 0 = every block"}
    )
    projections: tuple[str, ...] = field(
        default=DEFAULT_PROJECTIONS,
        metadata={"help": "attention/MLP projection names adapted inside each chosen block"},
    )
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout, in [0, 1)"})
    max_steps: int = field(default=30, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=2, metadata={"help": "rows per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=5e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear warmup before cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    max_length: int = field(
        default=1024,
        metadata={
            "help": "tokens per row: VL SFT drops longer rows, DPO keeps prompt + answer up to it, the text SFT "
            "truncates"
        },
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute activations in backward: less GPU memory for a large student, slower"},
    )
    seed: int = field(default=0, metadata={"help": "seeds LoRA init, data order and dropout"})

    def __post_init__(self) -> None:
        if isinstance(self.projections, list):
            object.__setattr__(self, "projections", tuple(self.projections))
        for name in ("r", "alpha", "max_steps", "batch_size", "grad_accum", "max_length"):
            _check_int(self, name, 1)
        _check_int(self, "last_k", 0)
        _check_int(self, "seed", 0)
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if not _is_number(self.learning_rate) or not self.learning_rate > 0:
            raise ValueError(f"lora.learning_rate must be > 0, got {self.learning_rate!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"lora.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not _is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"lora.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not _is_number(self.max_grad_norm) or not self.max_grad_norm > 0:
            raise ValueError(f"lora.max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        if not isinstance(self.activation_checkpointing, bool):
            raise ValueError(
                f"lora.activation_checkpointing must be true or false, got {self.activation_checkpointing!r}"
            )
        if (
            not isinstance(self.projections, tuple)
            or not self.projections
            or not all(isinstance(p, str) and p for p in self.projections)
        ):
            raise ValueError(
                f"lora.projections must name at least one projection, e.g. q_proj, got {self.projections!r}"
            )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(spec: LoraTrainingSpec, name: str, low: int) -> None:
    value = getattr(spec, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"lora.{name} must be an integer >= {low}, got {value!r}")
