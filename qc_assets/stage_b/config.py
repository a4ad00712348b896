"""Stage-B loop configuration: a dataclass with defaults sized for the embedded 135M model on CPU."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qc_assets.stage_b.gate import GateThresholds


def checked_decode_grid(grid) -> tuple[tuple[float, float], ...]:
    """A decode grid as float (temperature, top_p) pairs, refused when empty, malformed or repeated."""
    for setting in grid:
        if len(setting) != 2:
            raise ValueError(f"decode_grid entries must be (temperature, top_p), got {list(setting)}")
    checked = tuple((float(t), float(p)) for t, p in grid)
    if not checked:
        raise ValueError("decode_grid must hold at least one (temperature, top_p) setting")
    for t, p in checked:
        if t < 0 or not 0 < p <= 1:
            raise ValueError(f"decode_grid setting ({t}, {p}) needs temperature >= 0 and top_p in (0, 1]")
    if len(set(checked)) != len(checked):
        raise ValueError(f"decode_grid has repeated settings: {checked}")
    return checked


@dataclass(frozen=True)
class StageBLoopConfig:
    epochs: int = field(default=2, metadata={"help": "max epochs; stops earlier once an epoch accepts no edit"})
    # Greedy by default so the CPU demo does one rollout per group; production passes a wider grid,
    # e.g. ((0.0, 1.0), (0.7, 0.9)) with 4 samples, through the asset's run config.
    decode_grid: tuple[tuple[float, float], ...] = field(
        default=((0.0, 1.0),), metadata={"help": "(temperature, top_p) settings each group is rolled out under"}
    )
    samples: int = field(default=2, metadata={"help": "samples per sampled setting (greedy settings use one)"})
    seed: int = field(default=0, metadata={"help": "seeds the split, the rollout seeds, reflection and bootstrap"})
    selection_fraction: float = field(
        default=0.25,
        metadata={"help": "share of groups for selection: the eval veto and the choice of the kept version"},
    )
    test_fraction: float = field(
        default=0.25, metadata={"help": "share of groups for test: read once at the end, baseline vs kept"}
    )
    min_test_groups: int = field(
        default=20, metadata={"help": "below this many test groups the test comparison is reported as inconclusive"}
    )
    test_interval_level: float = field(
        default=0.95, metadata={"help": "confidence level of the paired bootstrap interval on test"}
    )
    max_provider_failure_rate: float = field(
        default=0.05, metadata={"help": "fail the run when more than this share of this run's LLM calls failed"}
    )
    min_relative_error_reduction: float = field(default=0.1, metadata={"help": "gate: (base-cand)/base errors"})
    max_changed_fraction: float = field(default=0.5, metadata={"help": "gate: max share of changed verdicts"})
    min_bootstrap_prob: float = field(default=0.7, metadata={"help": "gate: P(candidate better) over resamples"})
    false_release_tolerance: float = field(default=0.0, metadata={"help": "gate+veto: allowed false-release rise"})
    max_eval_accuracy_drop: float = field(default=0.0, metadata={"help": "veto: allowed selection accuracy drop"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples in the gate"})
    max_new_tokens: int = field(default=32, metadata={"help": "verdict completion budget"})
    constrained: bool = field(default=True, metadata={"help": "decode under the verdict contract (regex)"})
    rollout_batch_size: int = field(default=8, metadata={"help": "conversations per llm.chat call"})
    reflection_batch_size: int = field(default=4, metadata={"help": "error cases shown to the reflector"})
    reflection_max_new_tokens: int = field(default=160, metadata={"help": "reflection completion budget"})
    reflection_temperature: float = field(default=0.7, metadata={"help": "reflection sampling temperature"})
    rounds_per_epoch: int = field(default=2, metadata={"help": "reflection rounds per epoch (one edit each)"})
    max_candidates_per_round: int = field(default=2, metadata={"help": "filtered edits gated per round"})
    gate_chunk_size: int = field(
        default=0,
        metadata={
            "help": "roll a candidate out this many groups at a time and stop once it cannot "
            "pass the gate; 0 = whole selection pool at once"
        },
    )
    label_hint: bool = field(default=False, metadata={"help": "show reviewers' labels to the reflector (experiments)"})
    reflection_json_schema: bool = field(
        default=False,
        metadata={
            "help": "constrain reflection answers to the rule-operation JSON schema "
            "(OpenAI-compatible backends only; transformers refuses it)"
        },
    )
    start_from: str = field(
        default="initial",
        metadata={
            "help": "initial: learn from the mission's initial guidance on a fresh split; "
            "kept: re-learn from the kept guidance, groups keep the split side an "
            "earlier run gave them, only new groups are split (re-learning)"
        },
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "decode_grid", checked_decode_grid(self.decode_grid))
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name in (
            "samples",
            "min_test_groups",
            "max_new_tokens",
            "rollout_batch_size",
            "reflection_batch_size",
            "reflection_max_new_tokens",
            "rounds_per_epoch",
            "max_candidates_per_round",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gate_chunk_size < 0:
            raise ValueError(f"gate_chunk_size must be >= 0, got {self.gate_chunk_size}")
        for name in ("selection_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.selection_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"selection_fraction + test_fraction must be < 1 to leave train groups, got "
                f"{self.selection_fraction} + {self.test_fraction}"
            )
        if not 0 < self.test_interval_level < 1:
            raise ValueError(f"test_interval_level must be in (0, 1), got {self.test_interval_level}")
        if not 0 <= self.max_provider_failure_rate <= 1:
            raise ValueError(f"max_provider_failure_rate must be in [0, 1], got {self.max_provider_failure_rate}")
        if self.reflection_temperature < 0:
            raise ValueError(f"reflection_temperature must be >= 0, got {self.reflection_temperature}")
        if self.start_from not in ("initial", "kept"):
            raise ValueError(f"start_from must be 'initial' or 'kept', got {self.start_from!r}")
        _ = self.thresholds  # validates the gate thresholds now, not mid-run

    @property
    def thresholds(self) -> GateThresholds:
        return GateThresholds(
            min_relative_error_reduction=self.min_relative_error_reduction,
            max_changed_fraction=self.max_changed_fraction,
            min_bootstrap_prob=self.min_bootstrap_prob,
            false_release_tolerance=self.false_release_tolerance,
            bootstrap_samples=self.bootstrap_samples,
            max_eval_accuracy_drop=self.max_eval_accuracy_drop,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decode_grid"] = [list(s) for s in self.decode_grid]
        return d
