"""Canonicalize + sample_id + dedup on N generated rows: polars (vectorised) vs a per-row Python loop.

    .venv/bin/python -m benchmarks.fastdistill_dedup --rows 1000000

Both start from the same JSONL file (the raw input as it arrives) and must produce the same kept sample_ids in the same order; the script checks it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import polars as pl

from qc_assets.fastdistill.canonical import canonical_dedup_frame, decode_profile, with_ids

SCHEMAS = [f"CREATE TABLE t{i} (id INTEGER, name TEXT, value REAL, city TEXT)" for i in range(20)]
WORDS = ["price", "population", "城市", "人口", "average", "count", "Lyon", "杭州", "Café", "orders", "最高", "list"]


def make_rows(n: int, seed: int, dup_fraction: float) -> list[dict]:
    rng = random.Random(seed)
    unique = max(1, int(n * (1 - dup_fraction)))
    base = [{"task_id": "text2sql", "db_id": f"db{rng.randrange(50)}",
             "question": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + f" #{i}?",
             "schema": rng.choice(SCHEMAS)} for i in range(unique)]
    return base + [dict(base[rng.randrange(unique)]) for _ in range(n - unique)]


def python_loop(path: Path, profile: str) -> list[str]:
    seen: set[str] = set()
    kept = []
    for line in open(path, encoding="utf-8"):
        sid = with_ids(json.loads(line), profile)["sample_id"]
        if sid not in seen:
            seen.add(sid)
            kept.append(sid)
    return kept


def polars_path(path: Path, profile: str) -> list[str]:
    kept, _ = canonical_dedup_frame(pl.read_ndjson(path), profile)
    return kept["sample_id"].to_list()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dup-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    profile = decode_profile({"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 128, "seed": 0, "n": 1})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for row in make_rows(args.rows, args.seed, args.dup_fraction):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        t0 = time.perf_counter()
        fast = polars_path(path, profile)
        t1 = time.perf_counter()
        slow = python_loop(path, profile)
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
