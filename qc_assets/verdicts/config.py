"""Configuration of the production verdicts: one dataclass, from which the Dagster run config is derived.

The decode defaults equal Stage-B's scoring defaults (`StageBLoopConfig`: greedy, 2 samples per
sampled setting, seed 0, 32 tokens, constrained), so a group is judged in production exactly as the
kept guidance was scored; a test keeps the two in step. Production widens the grid through run
config, e.g. `decode_grid: [[0.0, 1.0], [0.7, 0.9]]` with `samples: 4`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qc_assets.stage_b.config import checked_decode_grid

# The verdict model answers the Stage-B prompt. `llm` is the Stage-B LLM resource; a fused student
# checkpoint answering the same prompt becomes a second choice once it loads as a checkpoint.
# llm: the Stage-B LLM resource; student: the promoted fused student (<data>/fused_sft_checkpoint/current)
VERDICT_MODELS = ("llm", "student")


@dataclass(frozen=True)
class VerdictConfig:
    verdict_model: str = field(default="llm", metadata={"help": f"which model judges: one of {VERDICT_MODELS}"})
    decode_grid: tuple[tuple[float, float], ...] = field(
        default=((0.0, 1.0),), metadata={"help": "(temperature, top_p) settings; as Stage-B's rollouts"}
    )
    samples: int = field(default=2, metadata={"help": "samples per sampled setting (greedy settings use one)"})
    seed: int = field(default=0, metadata={"help": "run seed of the paired sample seeds (Stage-B's derive_seed)"})
    max_new_tokens: int = field(default=32, metadata={"help": "verdict completion budget"})
    constrained: bool = field(default=True, metadata={"help": "decode under the verdict contract (regex)"})
    batch_size: int = field(default=8, metadata={"help": "conversations per llm.chat call"})
    min_agreement: float = field(
        default=0.75, metadata={"help": "a group whose share of agreeing samples is below this needs review"}
    )
    max_needs_review_share: float = field(
        default=0.5, metadata={"help": "warn (asset check) when more of the inbox than this needs review"}
    )
    window_reviews: int = field(
        default=200, metadata={"help": "drift watch: the last this many reviews form the agreement window"}
    )
    window_days: float | None = field(
        default=None, metadata={"help": "drift watch: the reviews of the last this many days instead (None = by count)"}
    )
    min_reviews: int = field(
        default=30, metadata={"help": "drift watch: below this many reviews in the window nothing is concluded"}
    )
    drift_margin: float = field(
        default=0.05, metadata={"help": "drift when the window's upper bound < baseline accuracy - this margin"}
    )
    drift_severity: str = field(
        default="WARN", metadata={"help": "severity of qc_verdicts_agreement_holds when it fails: WARN | ERROR"}
    )

    def __post_init__(self) -> None:
        if self.verdict_model not in VERDICT_MODELS:
            raise ValueError(f"verdict_model must be one of {VERDICT_MODELS}, got {self.verdict_model!r}")
        if self.verdict_model == "student" and self.constrained:
            raise ValueError("verdict_model 'student' decodes without a regex constraint: set constrained: false")
        object.__setattr__(self, "decode_grid", checked_decode_grid(self.decode_grid))
        for name in ("samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window_reviews < 1 or self.min_reviews < 1:
            raise ValueError(
                f"window_reviews and min_reviews must be >= 1, got {self.window_reviews}, {self.min_reviews}"
            )
        if self.window_days is not None and self.window_days <= 0:
            raise ValueError(f"window_days must be > 0 or None, got {self.window_days}")
        if self.drift_severity not in ("WARN", "ERROR"):
            raise ValueError(f"drift_severity must be WARN or ERROR, got {self.drift_severity!r}")
        for name in ("min_agreement", "max_needs_review_share", "drift_margin"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def drift_settings(self):
        from qc_assets.verdicts.drift import DriftSettings

        return DriftSettings(self.window_reviews, self.window_days, self.min_reviews, self.drift_margin)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decode_grid"] = [list(s) for s in self.decode_grid]
        return d
