"""One row per mission: how its kept guidance and its production verdicts are doing.

Plain functions over the files the assets write (no Dagster): Stage-B's `result.json` and guidance
store, qc_verdicts' table, reviews and drift state, the student's promotion log.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from qc_assets.asset_names import STAGE_B_GUIDANCE
from qc_assets.stage_a.gt_reasons import top_gt_reasons
from qc_assets.stage_b.relearn import last_relearn
from qc_assets.verdicts.drift import wilson_interval
from resources.store import read_jsonl


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def guidance_columns(stage_b_dir: Path) -> dict:
    result = _json(stage_b_dir / "result.json")
    if result is None:
        return {
            "guidance_version": None,
            "guidance_learned_at": None,
            "test_accuracy": None,
            "test_interval": None,
            "test_note": "no Stage-B run yet",
        }
    kept = _json(stage_b_dir / "guidance" / f"v{result['kept_version']:04d}.json") or {}
    test = result["test"]
    columns = {
        "guidance_version": result["kept_version"],
        "guidance_learned_at": kept.get("created_at"),
        "test_accuracy": None,
        "test_interval": None,
        "test_note": test.get("note") or test.get("verdict"),
    }
    if test.get("conclusive"):
        n = test["n_groups"]
        low, high = wilson_interval(round(test["kept_accuracy"] * n), n)
        columns.update(
            test_accuracy=test["kept_accuracy"],
            test_interval=[round(low, 4), round(high, 4)],
            test_note=f"{n} test groups",
        )
    return columns


def weekly_agreement(reviews: list[dict]) -> list[dict]:
    """Per ISO week the reviews were first seen: reviews and agreement."""
    weeks: dict[str, list[bool]] = defaultdict(list)
    for r in reviews:
        year, week, _ = datetime.fromtimestamp(r["first_seen_at"], tz=UTC).isocalendar()
        weeks[f"{year}-W{week:02d}"].append(bool(r["agrees"]))
    return [{"week": w, "reviews": len(v), "agreement": round(sum(v) / len(v), 4)} for w, v in sorted(weeks.items())]


def student_columns(student_dir: Path) -> dict:
    decisions = read_jsonl(student_dir / "promotions.jsonl")
    current = student_dir / "current"
    promoted = current.resolve().name if current.exists() else None
    last = decisions[-1] if decisions else None
    gate = (
        "no student run yet"
        if last is None
        else ("passed" if last["promoted"] else f"refused: {'; '.join(last['failures'])[:200]}")
    )
    return {"student_promoted": promoted, "student_last_run": last and last["run_id"], "student_gate": gate}


def mission_row(
    mission: str,
    data_root: Path,
    drift: dict | None,
    verdict_rows: list[dict],
    reviews: list[dict],
    stage_a_records: list[dict],
) -> dict:
    pending = [r for r in verdict_rows if r["status"] == "pending"]
    flagged = sum(bool(r["needs_review"]) for r in pending)
    relearn = last_relearn(data_root / STAGE_B_GUIDANCE / mission)
    row = {
        "mission": mission,
        **guidance_columns(data_root / STAGE_B_GUIDANCE / mission),
        "last_relearn_at": None
        if relearn is None
        else datetime.fromtimestamp(relearn["at"], tz=UTC).isoformat(timespec="seconds"),
        "last_relearn_reason": None if relearn is None else relearn["reason"],
        "top_gt_fail_reasons": [f"{reason} ({n})" for reason, n in top_gt_reasons(stage_a_records, 3)],
        "inbox_groups": len(pending),
        "pending_review": flagged,
        "needs_review_share": round(flagged / len(pending), 4) if pending else None,
        "reviews_total": len(reviews),
        "weekly_agreement": weekly_agreement(reviews),
    }
    if drift is None:
        return {
            **row,
            "window_reviews": 0,
            "agreement": None,
            "agreement_interval": None,
            "drift": "no verdicts yet",
            "drifted": False,
        }
    return {
        **row,
        "window_reviews": drift["window_reviews"],
        "agreement": drift["agreement"],
        "agreement_interval": drift["interval"],
        "drift": drift["status"],
        "drifted": drift["drifted"],
    }


def sparkline(weekly: list[dict]) -> str:
    """Agreement per week as block characters (the last 12 weeks), for a table cell."""
    blocks = "▁▂▃▄▅▆▇█"
    return "".join(blocks[min(7, int(w["agreement"] * 8))] for w in weekly[-12:]) or "-"


def plot_weekly(rows: list[dict]) -> bytes:
    from qc_assets.plots import new_axes, png_bytes

    fig, ax = new_axes()
    for i, row in enumerate(rows):
        weekly = row["weekly_agreement"]
        if weekly:
            # ASCII legend: the default matplotlib font has no CJK glyphs; the table maps numbers to missions
            ax.plot([w["week"] for w in weekly], [w["agreement"] for w in weekly], marker="o", label=f"mission {i + 1}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("machine agrees with reviewer")
    ax.set_title("agreement with reviewers per week")
    ax.legend(loc="lower right")
    fig.autofmt_xdate()
    return png_bytes(fig)
