"""Seeded, stratified train/eval split over groups.

The unit is the group id, not the record: both records of a resubmission (same group id, two labels)
land on the same side, otherwise eval would contain near-copies of train groups. Strata are the set
of labels a group carries ("pass", "fail", "fail+pass"), so each side keeps the label mix.
"""

from __future__ import annotations

import random
from collections import defaultdict


def group_records(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        groups[rec["group_id"]].append(rec)
    return dict(groups)


def split_groups(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train_records, eval_records). Each stratum with >= 2 groups gives at least one group to eval
    when `eval_fraction > 0`; a stratum of one group stays in train."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    ids = [r.get("record_id") for r in records]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("every record needs a unique record_id")
    groups = group_records(records)
    strata: dict[str, list[str]] = defaultdict(list)
    for gid, recs in groups.items():
        strata["+".join(sorted({r["label"] for r in recs}))].append(gid)
    rng = random.Random(seed)
    eval_groups: set[str] = set()
    for key in sorted(strata):
        members = sorted(strata[key])
        rng.shuffle(members)
        n_eval = round(len(members) * eval_fraction)
        if eval_fraction > 0 and len(members) >= 2:
            n_eval = min(max(n_eval, 1), len(members) - 1)
        eval_groups.update(members[:n_eval])
    train = [r for r in records if r["group_id"] not in eval_groups]
    held = [r for r in records if r["group_id"] in eval_groups]
    return train, held
