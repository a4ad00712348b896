"""Teacher-distillation configuration: a dataclass with defaults sized for the embedded 135M model.

Recipes (seed 001) are flags:
- `short_rationale` (Distilling Step-by-Step): the `理由` line is the rationale; an answer whose
  rationale is longer than `max_reason_chars` is rejected (`reason_too_long`). The prompt cannot ask
  for brevity, since it must stay byte-identical to the production prompt, so the budget is a filter.
- `multi_sample` (Data Distillation): every distinct accepted sample of a group is kept; when off,
  only the first accepted sample (in sample order) is kept and the others are `not_selected`.
- `preference_pairs` (preference KD / DPO): `(prompt, chosen, rejected)` from an accepted answer and
  an incorrect one (label mismatch or broken format) of the same group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

GUIDANCE_POINTERS = ("best", "current")
SOURCES = ("auto", "selections", "teacher")


@dataclass(frozen=True)
class DistillConfig:
    source: str = field(
        default="auto",
        metadata={
            "help": (
                "selections: export Stage-B's selected candidate of each train and selection group from the epoch that "
                "evaluated the kept guidance (no teacher call; Stage-B must have run with the teacher model); teacher: "
                "ask the teacher again, n_samples per group; auto: selections when Stage-B's model fingerprint equals "
                "the teacher's, else teacher"
            )
        },
    )
    n_samples: int = field(default=4, metadata={"help": "teacher samples per group (source: teacher)"})
    temperature: float = field(default=0.7, metadata={"help": "teacher sampling temperature (0 = greedy)"})
    top_p: float = field(default=0.95, metadata={"help": "teacher nucleus sampling mass"})
    max_new_tokens: int = field(default=64, metadata={"help": "teacher completion budget in tokens"})
    seed: int = field(default=0, metadata={"help": "base seed; sample i of every group uses a seed derived from it"})
    constrained: bool = field(
        default=False,
        metadata={
            "help": "decode under the verdict contract (DecodeParams.constraint) where the "
            "backend can; with source auto, Stage-B's selections qualify only if "
            "decoded so too"
        },
    )
    guidance: str = field(default="best", metadata={"help": "which Stage-B guidance pointer to distil under"})
    batch_size: int = field(default=8, metadata={"help": "conversations per llm.chat call"})
    short_rationale: bool = field(default=True, metadata={"help": "recipe: enforce max_reason_chars on the 理由 line"})
    max_reason_chars: int = field(default=80, metadata={"help": "rationale budget in characters"})
    multi_sample: bool = field(default=True, metadata={"help": "recipe: keep every distinct accepted sample"})
    preference_pairs: bool = field(default=True, metadata={"help": "recipe: export DPO pairs"})
    # How much a hard row weighs is the fusion config's business (sources[].hard_case_factor, seed 000);
    # distillation only marks the rows (`hard_case`).
    hard_fail_groups: bool = field(
        default=True,
        metadata={"help": "fail-labelled groups (label = fail and verdict = fail once kept) count as hard"},
    )
    hard_majority_wrong: bool = field(
        default=True, metadata={"help": "groups the Stage-B majority got wrong under the kept guidance count as hard"}
    )
    min_label_share: float = field(
        default=0.2, metadata={"help": "balance check: each label's share of exported rows must be >= this"}
    )
    allow_unconverged: bool = field(
        default=False,
        metadata={
            "help": "distil under the guidance of a Stage-B run that did not converge "
            "(recorded in the metadata); by default such a run is refused"
        },
    )

    def __post_init__(self) -> None:
        for name in ("n_samples", "max_new_tokens", "batch_size", "max_reason_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.guidance not in GUIDANCE_POINTERS:
            raise ValueError(f"guidance must be one of {GUIDANCE_POINTERS}, got {self.guidance!r}")
        if not 0 <= self.min_label_share <= 0.5:
            raise ValueError(f"min_label_share must be in [0, 0.5] (two labels), got {self.min_label_share}")
        if self.temperature == 0 and self.n_samples > 1 and self.multi_sample:
            # Greedy samples are identical; n > 1 would only produce duplicate_answer rejections.
            raise ValueError(
                f"temperature=0 with n_samples={self.n_samples} repeats one answer; use temperature > 0 or n_samples=1"
            )

    def to_dict(self) -> dict:
        return asdict(self)
