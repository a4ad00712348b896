"""The paired group bootstrap behind every "is the new one better?" decision (Stage-B gate and test,
the student's regression gate). Plain numpy, no Dagster.

Both sides score the same items; an item's two scores stay together, and items of one group (a
resubmission's records) are resampled together, so a group counted twice never narrows the result.
One seeded draw (`numpy.random.default_rng(seed).integers`) gives the same numbers on every run.

scipy.stats.bootstrap(paired=True) was weighed and not used: scipy is not a dependency (and not
installed), it resamples observations rather than clusters (group resampling would still need the
per-group sums and a ratio statistic written here), and the Stage-B gate wants a probability, not
an interval. What remains is five lines of numpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedBootstrap:
    """`estimate`: mean of (other - base) over items; `resampled`: that mean on each group resample."""

    estimate: float
    resampled: np.ndarray

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided percentile interval at `level` (e.g. 0.95)."""
        tail = (1 - level) / 2
        low, high = np.quantile(self.resampled, [tail, 1 - tail])
        return float(low), float(high)

    def prob_positive(self) -> float:
        """Share of resamples where `other` beats `base` (mean difference > 0)."""
        return float((self.resampled > 0).mean())


def paired_group_bootstrap(
    base: Sequence[float], other: Sequence[float], samples: int, seed: int, groups: Sequence[Hashable] | None = None
) -> PairedBootstrap:
    """Resample groups with replacement (each item its own group when `groups` is None) and take the
    mean item difference `other - base` of each resample (sum of differences / number of items).

    >>> b = paired_group_bootstrap([1, 1, 1], [0, 0, 0], 200, 0)
    >>> b.estimate, b.interval(0.95), b.prob_positive()
    (-1.0, (-1.0, -1.0), 0.0)
    """
    if len(base) != len(other):
        raise ValueError(f"{len(base)} base scores for {len(other)} other scores: the items must be paired")
    if len(base) == 0:
        raise ValueError("no paired items to bootstrap")
    if groups is not None and len(groups) != len(base):
        raise ValueError(f"{len(groups)} group ids for {len(base)} paired items")
    deltas = np.asarray(other, dtype=float) - np.asarray(base, dtype=float)
    if groups is None:
        diffs, sizes = deltas, np.ones(len(deltas))
    else:
        keys = sorted(set(groups))
        position = {k: i for i, k in enumerate(keys)}
        index = np.array([position[g] for g in groups])
        diffs = np.bincount(index, weights=deltas, minlength=len(keys))
        sizes = np.bincount(index, minlength=len(keys)).astype(float)
    idx = np.random.default_rng(seed).integers(0, len(diffs), size=(samples, len(diffs)))
    resampled = diffs[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    return PairedBootstrap(float(diffs.sum() / sizes.sum()), resampled)
