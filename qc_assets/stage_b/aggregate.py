"""Per-group majority vote over well-formed verdicts; `fail` wins ties.

Ties go to `fail` because a false release (passing a bad installation) costs more than a false
rejection, which a reviewer sees and overturns. A group with no well-formed verdict has no
prediction and counts as an error (never as a pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    predicted: str | None
    agreement: float  # share of well-formed verdicts that agree with `predicted` (0 when none)
    n_pass: int
    n_fail: int
    n_invalid: int


def majority(verdicts: Sequence[str | None]) -> Vote:
    """>>> majority(["pass", "fail"]).predicted
    'fail'
    """
    n_pass = sum(1 for v in verdicts if v == "pass")
    n_fail = sum(1 for v in verdicts if v == "fail")
    n_invalid = len(verdicts) - n_pass - n_fail
    if n_pass + n_fail == 0:
        return Vote(None, 0.0, 0, 0, n_invalid)
    predicted = "pass" if n_pass > n_fail else "fail"
    agreement = max(n_pass, n_fail) / (n_pass + n_fail)
    return Vote(predicted, agreement, n_pass, n_fail, n_invalid)


@dataclass(frozen=True)
class GroupOutcome:
    record_id: str
    group_id: str
    label: str
    predicted: str | None
    agreement: float
    n_pass: int = 0
    n_fail: int = 0
    n_invalid: int = 0

    @property
    def correct(self) -> bool:
        return self.predicted == self.label

    @property
    def false_release(self) -> bool:
        return self.predicted == "pass" and self.label == "fail"

    @property
    def mixed(self) -> bool:
        return self.n_pass > 0 and self.n_fail > 0


def outcome_from_votes(record: dict, verdicts: Sequence[str | None]) -> GroupOutcome:
    vote = majority(verdicts)
    return GroupOutcome(
        record_id=record["record_id"],
        group_id=record["group_id"],
        label=record["label"],
        predicted=vote.predicted,
        agreement=vote.agreement,
        n_pass=vote.n_pass,
        n_fail=vote.n_fail,
        n_invalid=vote.n_invalid,
    )


def accuracy(outcomes: Sequence[GroupOutcome]) -> float:
    return sum(o.correct for o in outcomes) / len(outcomes) if outcomes else 0.0


def false_release_rate(outcomes: Sequence[GroupOutcome]) -> float:
    """Share of truly failing groups that were predicted pass."""
    fails = [o for o in outcomes if o.label == "fail"]
    return sum(o.false_release for o in fails) / len(fails) if fails else 0.0
