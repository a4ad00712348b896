"""The statistical gate for one proposed edit, and the eval veto, both on the selection pool. Pure functions.

Both compare per-group outcomes of the baseline guidance and the candidate, paired by record id
(same groups, same decode seeds). The earlier system accepted wrong rules before it had a gate and
documented an eval veto it never enforced; here the loop calls `eval_veto` and obeys it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from qc_assets.stage_b.aggregate import GroupOutcome, accuracy, false_release_rate
from qc_assets.stats import paired_group_bootstrap


@dataclass(frozen=True)
class GateThresholds:
    min_relative_error_reduction: float = 0.1  # (base_err - cand_err) / base_err must reach this
    max_changed_fraction: float = 0.5  # share of groups whose predicted verdict changes
    min_bootstrap_prob: float = 0.7  # P(candidate has fewer errors) over group resamples
    false_release_tolerance: float = 0.0  # allowed rise of the false-release rate (train and eval)
    bootstrap_samples: int = 1000
    max_eval_accuracy_drop: float = 0.0  # eval veto: candidate eval accuracy may not fall more than this

    def __post_init__(self) -> None:
        for name in (
            "min_relative_error_reduction",
            "max_changed_fraction",
            "min_bootstrap_prob",
            "false_release_tolerance",
            "max_eval_accuracy_drop",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.bootstrap_samples < 1:
            raise ValueError(f"bootstrap_samples must be >= 1, got {self.bootstrap_samples}")


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    reasons: tuple[str, ...]  # why it was rejected; empty when accepted
    n_groups: int
    base_errors: int
    cand_errors: int
    fixed: int  # wrong under baseline, right under candidate
    broken: int  # right under baseline, wrong under candidate
    relative_error_reduction: float
    changed_fraction: float
    bootstrap_prob: float
    base_false_release: float
    cand_false_release: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


@dataclass(frozen=True)
class VetoResult:
    vetoed: bool
    reasons: tuple[str, ...]
    n_groups: int
    base_accuracy: float
    cand_accuracy: float
    base_false_release: float
    cand_false_release: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def pair(
    baseline: Sequence[GroupOutcome], candidate: Sequence[GroupOutcome]
) -> list[tuple[GroupOutcome, GroupOutcome]]:
    base = {o.record_id: o for o in baseline}
    cand = {o.record_id: o for o in candidate}
    if set(base) != set(cand):
        missing, extra = sorted(set(base) - set(cand)), sorted(set(cand) - set(base))
        raise ValueError(f"gate needs the same groups on both sides; missing {missing}, extra {extra}")
    return [(base[k], cand[k]) for k in sorted(base)]


def gate(
    baseline: Sequence[GroupOutcome], candidate: Sequence[GroupOutcome], thresholds: GateThresholds, seed: int
) -> GateResult:
    pairs = pair(baseline, candidate)
    n = len(pairs)
    base_wrong = np.array([not b.correct for b, _ in pairs], dtype=int)
    cand_wrong = np.array([not c.correct for _, c in pairs], dtype=int)
    base_err, cand_err = int(base_wrong.sum()), int(cand_wrong.sum())
    rer = (base_err - cand_err) / base_err if base_err else 0.0
    changed = sum(b.predicted != c.predicted for b, c in pairs) / n if n else 0.0
    # P(candidate makes fewer errors) over resamples of the paired groups
    prob = (
        paired_group_bootstrap(1 - base_wrong, 1 - cand_wrong, thresholds.bootstrap_samples, seed).prob_positive()
        if n
        else 0.0
    )
    base_fr = false_release_rate([b for b, _ in pairs])
    cand_fr = false_release_rate([c for _, c in pairs])
    reasons = []
    if n == 0:
        reasons.append("no groups to gate on")
    if base_err == 0:
        reasons.append("baseline makes no errors on the gated pool")
    if rer < thresholds.min_relative_error_reduction:
        reasons.append(f"relative error reduction {rer:.3f} < {thresholds.min_relative_error_reduction}")
    if changed > thresholds.max_changed_fraction:
        reasons.append(f"changed fraction {changed:.3f} > {thresholds.max_changed_fraction}")
    if prob < thresholds.min_bootstrap_prob:
        reasons.append(f"bootstrap probability {prob:.3f} < {thresholds.min_bootstrap_prob}")
    if cand_fr > base_fr + thresholds.false_release_tolerance + 1e-12:
        reasons.append(
            f"false-release rate rose {base_fr:.3f} -> {cand_fr:.3f} (tolerance {thresholds.false_release_tolerance})"
        )
    return GateResult(
        accepted=not reasons,
        reasons=tuple(reasons),
        n_groups=n,
        base_errors=base_err,
        cand_errors=cand_err,
        fixed=int(((base_wrong == 1) & (cand_wrong == 0)).sum()),
        broken=int(((base_wrong == 0) & (cand_wrong == 1)).sum()),
        relative_error_reduction=rer,
        changed_fraction=changed,
        bootstrap_prob=prob,
        base_false_release=base_fr,
        cand_false_release=cand_fr,
    )


def gate_still_possible(
    baseline: Sequence[GroupOutcome], candidate_so_far: Sequence[GroupOutcome], thresholds: GateThresholds
) -> bool:
    """False once the candidate can no longer pass, whatever the unseen groups do.

    Lets the loop stop rolling out a hopeless candidate early. Optimistic bounds: every unseen group
    is assumed right under the candidate and unchanged.
    """
    base = {o.record_id: o for o in baseline}
    n = len(base)
    if n == 0:
        return False
    seen = [(base[c.record_id], c) for c in candidate_so_far]
    changed = sum(b.predicted != c.predicted for b, c in seen)
    if changed / n > thresholds.max_changed_fraction:
        return False
    base_err = sum(not b.correct for b in base.values())
    if base_err == 0:
        return False
    best_cand_err = sum(not c.correct for _, c in seen)
    if (base_err - best_cand_err) / base_err < thresholds.min_relative_error_reduction:
        return False
    n_fail = sum(b.label == "fail" for b in base.values())
    if n_fail:
        base_fr = sum(b.false_release for b in base.values()) / n_fail
        cand_fr_min = sum(c.false_release for _, c in seen) / n_fail
        if cand_fr_min > base_fr + thresholds.false_release_tolerance + 1e-12:
            return False
    return True


def eval_veto(
    baseline_eval: Sequence[GroupOutcome], candidate_eval: Sequence[GroupOutcome], thresholds: GateThresholds
) -> VetoResult:
    """Veto an edit the gate accepted if selection accuracy drops or false releases rise."""
    pairs = pair(baseline_eval, candidate_eval)
    base = [b for b, _ in pairs]
    cand = [c for _, c in pairs]
    base_acc, cand_acc = accuracy(base), accuracy(cand)
    base_fr, cand_fr = false_release_rate(base), false_release_rate(cand)
    reasons = []
    if cand_acc < base_acc - thresholds.max_eval_accuracy_drop - 1e-12:
        reasons.append(
            f"eval accuracy fell {base_acc:.3f} -> {cand_acc:.3f} (allowed drop {thresholds.max_eval_accuracy_drop})"
        )
    if cand_fr > base_fr + thresholds.false_release_tolerance + 1e-12:
        reasons.append(f"eval false-release rate rose {base_fr:.3f} -> {cand_fr:.3f}")
    return VetoResult(
        vetoed=bool(reasons),
        reasons=tuple(reasons),
        n_groups=len(pairs),
        base_accuracy=base_acc,
        cand_accuracy=cand_acc,
        base_false_release=base_fr,
        cand_false_release=cand_fr,
    )


def choose_edit(passed: Sequence, veto_of) -> tuple[object | None, list[tuple[object, str, VetoResult | None]]]:
    """At most one edit per round: try gate-passed candidates best first; the first the selection pool
    does not veto is accepted, vetoed ones are refused, the rest are `not_chosen`.

    `veto_of(candidate) -> VetoResult` is called lazily (it costs eval rollouts) and never after a
    candidate was accepted. Returns (accepted candidate or None, [(candidate, decision, veto)]).
    """
    chosen = None
    decisions: list[tuple[object, str, VetoResult | None]] = []
    for cand in passed:
        if chosen is not None:
            decisions.append((cand, "not_chosen", None))
            continue
        veto = veto_of(cand)
        if veto.vetoed:
            decisions.append((cand, "vetoed", veto))
        else:
            chosen = cand
            decisions.append((cand, "accepted", veto))
    return chosen, decisions
