"""Per-stage reports of seed 004: manifest.json, quality_report.json, timing_report.json, and the
run metrics teacher_tokens_per_sec, pipeline_kept_samples_per_hour, train_tokens_per_sec.

`field_hash` is sha256 over the rows' canonical JSON in sample-id order: two stage outputs with the
same hash hold the same data, which is what a replay audit needs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from resources.store import atomic_write_json


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def manifest(rows: Sequence[dict], id_field: str = "sample_id") -> dict:
    columns = sorted({k for row in rows for k in row})
    ordered = sorted(rows, key=lambda r: (str(r.get(id_field)), json.dumps(r, sort_keys=True, default=str)))
    digest = hashlib.sha256()
    for row in ordered:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    ids = [str(r[id_field]) for r in rows if r.get(id_field) is not None]
    return {
        "count": len(rows),
        "field_hash": digest.hexdigest(),
        "min_sample_id": min(ids) if ids else None,
        "max_sample_id": max(ids) if ids else None,
        "columns": columns,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _stats(values: Sequence[float]) -> dict:
    vals = [v for v in values if v is not None]
    return {
        "count": len(vals),
        "mean": sum(vals) / len(vals) if vals else None,
        "min": min(vals) if vals else None,
        "max": max(vals) if vals else None,
        "p50": percentile(vals, 50),
    }


def passed_stage(row: dict) -> bool:
    """Whether a row is still alive after the latest gate it has been through."""
    if "kept" in row:
        return bool(row["kept"])
    if row.get("reject_reason") is not None:
        return False
    return bool(row.get("exec_pass", True))


def quality_report(rows: Sequence[dict]) -> dict:
    """Counts and rates over candidate rows; `kept` = survived this stage's gate; rates are None
    where the stage has not computed them."""
    total = len(rows)
    kept = sum(1 for r in rows if passed_stage(r))
    executed = [r for r in rows if "exec_pass" in r and r.get("reject_reason") is None]
    reasons = Counter(
        r.get("keep_reject_reason")
        or r.get("reject_reason")
        or (f"exec_{r['exec_error_class']}" if r.get("exec_error_class") else None)
        for r in rows
    )
    reasons.pop(None, None)
    return {
        "total": total,
        "kept": kept,
        "rejected": total - kept,
        "p_keep": kept / total if total else None,
        "exec_pass_rate": sum(r["exec_pass"] for r in rows) / total
        if total and rows and "exec_pass" in rows[0]
        else None,
        "gold_match_rate": sum(r["gold_match"] for r in rows) / total
        if total and rows and "gold_match" in rows[0]
        else None,
        "judge_score": _stats([r.get("judge_score") for r in rows]),
        "reject_reason_counts": dict(sorted(reasons.items())),
        "exec_error_counts": dict(
            sorted(Counter(r["exec_error_class"] for r in executed if r["exec_error_class"]).items())
        ),
    }


def stage_timing(durations_s: Sequence[float], wall_s: float) -> dict:
    return {
        "count": len(durations_s),
        "p50": percentile(durations_s, 50),
        "p90": percentile(durations_s, 90),
        "p95": percentile(durations_s, 95),
        "wall_s": wall_s,
    }


def timing_report(stages: dict[str, dict]) -> dict:
    """{"stages": {stage: {count, p50, p90, p95, wall_s}}, "total": {wall_s}}."""
    return {"stages": stages, "total": {"wall_s": sum(s["wall_s"] for s in stages.values())}}


def run_metrics(
    completion_tokens: int,
    teacher_wall_s: float,
    kept: int,
    total_wall_s: float,
    train_tokens: int | None = None,
    train_wall_s: float | None = None,
) -> dict:
    return {
        "teacher_tokens_per_sec": completion_tokens / teacher_wall_s if teacher_wall_s > 0 else None,
        "pipeline_kept_samples_per_hour": kept / (total_wall_s / 3600) if total_wall_s > 0 else None,
        "train_tokens_per_sec": train_tokens / train_wall_s if train_tokens is not None and train_wall_s else None,
    }


def write_stage_reports(stage_dir: Path, rows: Sequence[dict], timing: dict, id_field: str = "sample_id") -> dict:
    """manifest.json, quality_report.json and timing_report.json of one stage; returns them."""
    stage_dir = Path(stage_dir)
    reports = {
        "manifest": manifest(rows, id_field),
        "quality_report": quality_report(rows),
        "timing_report": timing_report({stage_dir.name: timing}),
    }
    for name, body in reports.items():
        atomic_write_json(stage_dir / f"{name}.json", json.loads(json.dumps(body, default=_jsonable)))
    return reports
