"""Optional per-label caps on the number of groups, sampled reproducibly for a seed."""

from __future__ import annotations

import random

from qc_assets.stage_a.discovery import Group


def sample_groups(
    groups: list[Group], pass_cap: int | None, fail_cap: int | None, seed: int
) -> tuple[list[Group], list[Group]]:
    """Return (kept, left_out). Each label is sampled independently; order follows discovery."""
    for name, cap in (("pass_cap", pass_cap), ("fail_cap", fail_cap)):
        if cap is not None and cap < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {cap}")
    kept_keys: set[str] = set()
    for label, cap in (("pass", pass_cap), ("fail", fail_cap)):
        keys = sorted(g.key for g in groups if g.label == label)
        if cap is not None and cap < len(keys):
            # a generator per label, so changing one cap never reshuffles the other label
            keys = random.Random(f"{seed}:{label}").sample(keys, cap)
        kept_keys.update(keys)
    kept = [g for g in groups if g.key in kept_keys]
    left_out = [g for g in groups if g.key not in kept_keys]
    return kept, left_out
