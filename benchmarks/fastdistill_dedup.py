"""Canonicalize + sample_id + dedup on N generated rows: polars (vectorised) vs a per-row Python loop.

    .venv/bin/python -m benchmarks.fastdistill_dedup --rows 1000000

Both paths must produce the same kept sample_ids in the same order; the script checks it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

import polars as pl

from qc_assets.fastdistill.canonical import canonicalize_frame, decode_profile, dedup_frame, with_ids

SCHEMAS = [f"CREATE TABLE t{i} (id INTEGER, name TEXT, value REAL, city TEXT)" for i in range(20)]
WORDS = ["price", "population", "城市", "人口", "average", "count", "Lyon", "杭州", "Café", "orders", "最高", "list"]


def make_rows(n: int, seed: int, dup_fraction: float) -> list[dict]:
    rng = random.Random(seed)
    unique = max(1, int(n * (1 - dup_fraction)))
    base = [{"task_id": "text2sql", "db_id": f"db{rng.randrange(50)}",
             "question": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + f" #{i}?",
             "schema": rng.choice(SCHEMAS)} for i in range(unique)]
    return base + [dict(base[rng.randrange(unique)]) for _ in range(n - unique)]


def python_loop(rows: list[dict], profile: str) -> list[str]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        sid = with_ids(row, profile)["sample_id"]
        if sid not in seen:
            seen.add(sid)
            kept.append(sid)
    return kept


def polars_path(rows: list[dict], profile: str) -> list[str]:
    frame = canonicalize_frame(pl.DataFrame(rows), profile)
    kept, _ = dedup_frame(frame)
    return kept["sample_id"].to_list()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dup-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = make_rows(args.rows, args.seed, args.dup_fraction)
    profile = decode_profile({"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 128, "seed": 0, "n": 1})
    t0 = time.perf_counter()
    fast = polars_path(rows, profile)
    t1 = time.perf_counter()
    slow = python_loop(rows, profile)
    t2 = time.perf_counter()
    if fast != slow:
        raise SystemExit("polars and the Python loop disagree on the kept sample_ids")
    result = {
        "rows": args.rows, "kept": len(fast), "polars_s": round(t1 - t0, 3), "python_loop_s": round(t2 - t1, 3),
        "polars_rows_per_s": round(args.rows / (t1 - t0)), "python_rows_per_s": round(args.rows / (t2 - t1)),
        "speedup": round((t2 - t1) / (t1 - t0), 2), "polars_version": pl.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
