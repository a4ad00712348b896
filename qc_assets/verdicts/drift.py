"""Drift watch: does the machine still agree with the reviewers as well as the kept guidance promised?

The window is the last `window_reviews` reviews (or those of the last `window_days`, when set) of
`reviews.jsonl`. Agreement is reported with a Wilson score interval (closed form, sound at small n
and near 0 or 1, where a normal interval is not). The baseline is the accuracy the kept guidance
showed on Stage-B's untouched test split (`result.json`); when that test was inconclusive (too few
test groups), the agreement of the first full window of reviews judged under the kept guidance.
Drift = the window's upper bound lies below baseline - `drift_margin`: even the most favourable
reading of the window is worse than promised. Below `min_reviews` nothing is concluded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

Z_95 = 1.959963984540054


def wilson_interval(agreed: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion; (0, 1) for n = 0.

    >>> [round(x, 3) for x in wilson_interval(8, 10)]
    [0.49, 0.943]
    """
    if n == 0:
        return 0.0, 1.0
    p = agreed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class DriftSettings:
    window_reviews: int
    window_days: float | None
    min_reviews: int
    drift_margin: float


def review_window(reviews: list[dict], settings: DriftSettings, now: float | None = None) -> list[dict]:
    """The reviews the window holds, oldest first."""
    ordered = sorted(reviews, key=lambda r: r["first_seen_at"])
    if settings.window_days is not None:
        since = (time.time() if now is None else now) - settings.window_days * 86400
        return [r for r in ordered if r["first_seen_at"] >= since]
    return ordered[-settings.window_reviews :]


def baseline(stage_b_result: dict | None, reviews: list[dict], settings: DriftSettings) -> tuple[float | None, str]:
    """(accuracy to hold, where it came from)."""
    if stage_b_result is None:
        return None, "no kept guidance yet"
    test = stage_b_result["test"]
    if test.get("conclusive"):
        # a refused re-learning kept the earlier version live: its number is the test's baseline side
        live = "baseline_accuracy" if test.get("refused_version") is not None else "kept_accuracy"
        return float(test[live]), f"Stage-B test split ({test['n_groups']} groups, {stage_b_result['run_id']})"
    kept = stage_b_result["kept_version"]
    live = sorted((r for r in reviews if r["guidance_version"] == kept), key=lambda r: r["first_seen_at"])
    first = live[: settings.window_reviews]
    if len(first) < settings.window_reviews:
        return None, (
            f"Stage-B test inconclusive ({test['n_groups']} groups) and only {len(first)} of "
            f"{settings.window_reviews} reviews under guidance v{kept} for a first window"
        )
    return sum(bool(r["agrees"]) for r in first) / len(first), f"first {len(first)} reviews under guidance v{kept}"


def drift_state(
    reviews: list[dict], stage_b_result: dict | None, settings: DriftSettings, now: float | None = None
) -> dict:
    """What the drift check reports; `drifted` is True only on enough reviews and a known baseline."""
    window = review_window(reviews, settings, now)
    n, agreed = len(window), sum(bool(r["agrees"]) for r in window)
    low, high = wilson_interval(agreed, n)
    base, source = baseline(stage_b_result, reviews, settings)
    flagged = [r for r in window if r.get("needs_review")]
    state = {
        "window_reviews": n,
        "agreed": agreed,
        "agreement": round(agreed / n, 4) if n else None,
        "interval": [round(low, 4), round(high, 4)],
        "interval_method": "Wilson score, 95%",
        "baseline": None if base is None else round(base, 4),
        "baseline_source": source,
        "drift_margin": settings.drift_margin,
        "min_reviews": settings.min_reviews,
        "needs_review_in_window": len(flagged),
        "needs_review_overturned": sum(not r["agrees"] for r in flagged),
        "needs_review_confirmed": sum(bool(r["agrees"]) for r in flagged),
        "recent_disagreements": [
            {
                "group_id": r["group_id"],
                "machine": r["verdict"],
                "reviewer": r["reviewer_label"],
                "reason": r.get("reason"),
            }
            for r in reversed(window)
            if not r["agrees"]
        ][:10],
    }
    if n < settings.min_reviews:
        return {**state, "drifted": False, "status": f"not enough reviews yet ({n} < {settings.min_reviews})"}
    if base is None:
        return {**state, "drifted": False, "status": f"no baseline: {source}"}
    drifted = high < base - settings.drift_margin
    return {
        **state,
        "drifted": drifted,
        "status": (
            f"drift: upper bound {high:.3f} < baseline {base:.3f} - margin {settings.drift_margin}"
            if drifted
            else f"holds: upper bound {high:.3f} >= baseline {base:.3f} - margin {settings.drift_margin}"
        ),
    }
