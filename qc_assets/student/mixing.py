"""Deterministic source mixing with a realised-ratio report.

Ratios are normalised over the non-empty sources (an empty source is reported, not fatal). Each
source's quota is its share of `total_rows` by largest remainder. A source is sampled without
replacement from a seeded shuffle; a quota larger than the source walks further reshuffled passes
(upsampling), and the report says so; a source with `sample_without_replacement` never upsamples: it
uses its pool once and the report says how many rows its quota lacked. The mixed list is shuffled
with the same seed, so the same pools, config and seed always give the same rows in the same order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from qc_assets.markdown import md_table


@dataclass(frozen=True)
class SourceReport:
    name: str
    type: str
    pool: int  # usable rows in the source
    target_ratio: float  # configured ratio normalised over all sources
    effective_ratio: float  # normalised over the non-empty sources only
    quota: int
    realised: int
    realised_ratio: float
    unique: int
    upsampled: bool
    note: str = ""


def _sub_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{name}".encode()).digest()[:8], "big")


def quotas(weights: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` by weight with the largest-remainder method (ties broken by name)."""
    norm = sum(weights.values())
    raw = {k: total * w / norm for k, w in weights.items()}
    out = {k: int(v) for k, v in raw.items()}
    rest = total - sum(out.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - out[k]), k))[:rest]:
        out[k] += 1
    return out


def _draw(pool: list, n: int, seed: int) -> list:
    rng = random.Random(seed)
    out: list = []
    while len(out) < n:
        order = list(range(len(pool)))
        rng.shuffle(order)
        out.extend(pool[i] for i in order[: n - len(out)])
    return out


def mix(
    pools: dict[str, list],
    ratios: dict[str, float],
    total_rows: int,
    seed: int,
    types: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    without_replacement: frozenset[str] | set[str] = frozenset(),
) -> tuple[list, list[SourceReport]]:
    """(mixed rows, one report per source in `ratios` order). `total_rows == 0` = sum of pool sizes."""
    if set(pools) != set(ratios):
        raise ValueError(f"pools {sorted(pools)} and ratios {sorted(ratios)} name different sources")
    bad = {k: v for k, v in ratios.items() if not v > 0}
    if bad:
        raise ValueError(f"ratios must be > 0, got {bad}")
    types, notes = types or {}, notes or {}
    live = {k: r for k, r in ratios.items() if pools[k]}
    total = total_rows or sum(len(pools[k]) for k in live)
    share = quotas(live, total) if live and total else {}
    all_norm = sum(ratios.values())
    live_norm = sum(live.values()) or 1.0
    mixed, reports = [], []
    for name, ratio in ratios.items():
        n = share.get(name, 0)
        note = notes.get(name, "") or ("" if pools[name] else "empty source")
        if name in without_replacement and n > len(pools[name]):
            note = f"sample_without_replacement: quota {n} > pool {len(pools[name])}, used the pool once" + (
                f"; {note}" if note else ""
            )
            n = len(pools[name])
        rows = _draw(pools[name], n, _sub_seed(seed, name)) if n else []
        mixed.extend(rows)
        reports.append(
            SourceReport(
                name=name,
                type=types.get(name, ""),
                pool=len(pools[name]),
                target_ratio=ratio / all_norm,
                effective_ratio=(ratio / live_norm) if name in live else 0.0,
                quota=n,
                realised=len(rows),
                realised_ratio=0.0,
                unique=min(len(rows), len(pools[name])),
                upsampled=n > len(pools[name]),
                note=note,
            )
        )
    random.Random(_sub_seed(seed, "\x00shuffle")).shuffle(mixed)
    n_mixed = len(mixed) or 1
    reports = [SourceReport(**{**r.__dict__, "realised_ratio": r.realised / n_mixed}) for r in reports]
    return mixed, reports


def report_table(reports: list[SourceReport]) -> str:
    return md_table(
        ["source", "type", "pool", "target", "realised", "rows", "upsampled", "note"],
        [
            (
                r.name,
                r.type,
                r.pool,
                f"{r.target_ratio:.3f}",
                f"{r.realised_ratio:.3f}",
                r.realised,
                "yes" if r.upsampled else "no",
                r.note[:80],
            )
            for r in reports
        ],
    )
