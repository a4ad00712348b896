"""The test side, read once at the end: baseline vs kept accuracy with a paired bootstrap interval.

Resampling is by group (a resubmission's two records move together), so the interval is not made
narrower by counting one group twice. Below `min_groups` test groups no number is reported: the
result says the test is too small to conclude, instead of printing an accuracy that means nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from qc_assets.stage_b.aggregate import GroupOutcome, accuracy
from qc_assets.stage_b.gate import pair
from qc_assets.stats import paired_group_bootstrap


def paired_bootstrap_interval(
    baseline: Sequence[GroupOutcome], kept: Sequence[GroupOutcome], samples: int, seed: int, level: float
) -> tuple[float, float, float]:
    """(kept - baseline accuracy, lower, upper) at `level`, resampling groups with replacement."""
    pairs = pair(baseline, kept)
    if not pairs:
        raise ValueError("paired bootstrap needs at least one test record on both sides")
    boot = paired_group_bootstrap(
        [b.correct for b, _ in pairs],
        [k.correct for _, k in pairs],
        samples,
        seed,
        groups=[b.group_id for b, _ in pairs],
    )
    return (boot.estimate, *boot.interval(level))


def compare_on_test(
    baseline: Sequence[GroupOutcome],
    kept: Sequence[GroupOutcome],
    *,
    baseline_version: int,
    kept_version: int,
    min_groups: int,
    samples: int,
    seed: int,
    level: float,
) -> dict:
    """What `result.json["test"]` holds. `verdict`: worse | better | no_difference | inconclusive."""
    n_groups = len({o.group_id for o in baseline})
    report = {
        "n_groups": n_groups,
        "n_records": len(baseline),
        "min_groups": min_groups,
        "baseline_version": baseline_version,
        "kept_version": kept_version,
        "level": level,
        "bootstrap_samples": samples,
        "seed": seed,
    }
    if n_groups < min_groups:
        return {
            **report,
            "conclusive": False,
            "verdict": "inconclusive",
            "note": f"{n_groups} test groups < min_test_groups={min_groups}: too small to compare "
            "baseline and kept guidance; no accuracy is reported",
        }
    diff, low, high = paired_bootstrap_interval(baseline, kept, samples, seed, level)
    verdict = "worse" if high < 0 else "better" if low > 0 else "no_difference"
    return {
        **report,
        "conclusive": True,
        "verdict": verdict,
        "baseline_accuracy": accuracy(baseline),
        "kept_accuracy": accuracy(kept),
        "difference": diff,
        "ci_low": low,
        "ci_high": high,
    }
