"""Seeded, stratified splits over groups: train / selection / test for Stage-B, train / eval for others.

The unit is the group id, not the record: both records of a resubmission (same group id, two labels)
land on the same side, otherwise a held-out side would contain near-copies of train groups. Strata
are the set of labels a group carries ("pass", "fail", "fail+pass"), so each side keeps the label mix.

Stage-B uses three sides: reflection sees only `train`; the gate's eval veto and the choice of the
kept version see only `selection`; `test` is read once, at the end, to report baseline vs kept.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass


def group_records(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        groups[rec["group_id"]].append(rec)
    return dict(groups)


def _strata(records: list[dict]) -> dict[str, list[str]]:
    ids = [r.get("record_id") for r in records]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("every record needs a unique record_id")
    strata: dict[str, list[str]] = defaultdict(list)
    for gid, recs in group_records(records).items():
        strata["+".join(sorted({r["label"] for r in recs}))].append(gid)
    return strata


def split_groups(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train_records, eval_records). Each stratum with >= 2 groups gives at least one group to eval
    when `eval_fraction > 0`; a stratum of one group stays in train."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    strata = _strata(records)
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


@dataclass(frozen=True)
class Split:
    train: list[dict]
    selection: list[dict]
    test: list[dict]

    def group_count(self, side: str) -> int:
        return len({r["group_id"] for r in getattr(self, side)})

    def to_dict(self) -> dict:
        return {side: [r["record_id"] for r in getattr(self, side)] for side in ("train", "selection", "test")}


def split_three_way(records: list[dict], selection_fraction: float, test_fraction: float, seed: int) -> Split:
    """Per stratum: `selection_fraction` of the groups to selection, `test_fraction` to test, the rest
    to train. A side with a positive fraction gets at least one group of a stratum while the stratum has
    a group to spare (train keeps one, selection is served first); a stratum of one group stays in train."""
    for name, value in (("selection_fraction", selection_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if selection_fraction + test_fraction >= 1:
        raise ValueError(
            f"selection_fraction + test_fraction must be < 1 to leave train groups, got "
            f"{selection_fraction} + {test_fraction}"
        )
    strata = _strata(records)
    rng = random.Random(seed)
    side_of: dict[str, str] = {}
    for key in sorted(strata):
        members = sorted(strata[key])
        rng.shuffle(members)
        n = len(members)
        n_test, n_sel = round(n * test_fraction), round(n * selection_fraction)
        spare = n - 1  # train keeps one group of every stratum
        # Selection before test: the loop cannot veto or choose without selection groups, while a test
        # side too small to conclude is reported as such.
        n_sel = min(max(n_sel, 1), spare) if selection_fraction > 0 and spare >= 1 else min(n_sel, spare)
        spare -= n_sel
        n_test = min(max(n_test, 1), spare) if test_fraction > 0 and spare >= 1 else min(n_test, spare)
        for i, gid in enumerate(members):
            side_of[gid] = "selection" if i < n_sel else "test" if i < n_sel + n_test else "train"
    sides: dict[str, list[dict]] = {"train": [], "selection": [], "test": []}
    for rec in records:
        sides[side_of[rec["group_id"]]].append(rec)
    return Split(**sides)


SIDES = ("train", "selection", "test")


def previous_sides(splits_row: dict, records: list[dict]) -> dict[str, str]:
    """group id -> side, from a `splits.jsonl` row (record ids per side) of an earlier run."""
    group_of = {r["record_id"]: r["group_id"] for r in records}
    return {group_of[rid]: side for side in SIDES for rid in splits_row.get(side, []) if rid in group_of}


def sticky_three_way(
    records: list[dict], previous: dict[str, str], selection_fraction: float, test_fraction: float, seed: int
) -> Split:
    """Re-learning: a group an earlier run placed keeps its side, so no group that run kept out of
    train or selection (test above all) is chosen on now; only groups new since then are split, by
    `split_three_way` on their own."""
    known = [r for r in records if r["group_id"] in previous]
    new = [r for r in records if r["group_id"] not in previous]
    fresh = split_three_way(new, selection_fraction, test_fraction, seed) if new else Split([], [], [])
    return Split(
        **{side: [r for r in known if previous[r["group_id"]] == side] + getattr(fresh, side) for side in SIDES}
    )
