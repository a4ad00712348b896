"""When a mission's guidance should be re-learned on its own: plain functions over the files the
assets write, evaluated by the `relearn_due` automation condition (qc_assets/stage_b/automation.py).

Due when the production verdicts drifted (qc_assets/verdicts/drift.py), or when `relearn_after` new
labelled groups (reviewed inbox groups included, once Stage-A summarised them) arrived that the kept
guidance's run never saw; never twice within `cooldown_s`, and never before a first, manual learning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from resources.env import env_number
from resources.store import append_jsonl, read_jsonl

TRIGGER_TAG = "qc/trigger"  # on every run the relearn automation launches
REASON_TAG = "qc/relearn_reason"  # drift | new_groups, added by the run itself
RELEARN_LOG = "relearn.jsonl"


@dataclass(frozen=True)
class RelearnSettings:
    relearn_after: int = 50
    cooldown_s: float = 86400.0

    @classmethod
    def from_env(cls) -> RelearnSettings:
        """QC_RELEARN_AFTER (groups) and QC_RELEARN_COOLDOWN_S (seconds): read where the condition is
        evaluated, outside any run, so they cannot be run config."""
        settings = cls(
            env_number("QC_RELEARN_AFTER", cls.relearn_after, int),
            env_number("QC_RELEARN_COOLDOWN_S", cls.cooldown_s, float),
        )
        if settings.relearn_after < 1 or settings.cooldown_s < 0:
            raise ValueError(f"QC_RELEARN_AFTER must be >= 1 and QC_RELEARN_COOLDOWN_S >= 0, got {settings}")
        return settings


def new_labelled_groups(stage_a_records: list[dict], stage_b_dir: Path) -> int:
    """Labelled groups in Stage-A's records that the latest Stage-B run's split does not hold."""
    rows = read_jsonl(stage_b_dir / "splits.jsonl")
    if not rows:
        return 0
    seen = {rid for side in ("train", "selection", "test") for rid in rows[-1].get(side, [])}
    return len(
        {r["group_id"] for r in stage_a_records if r.get("label") and r["record_id"] not in seen}
        - {r["group_id"] for r in stage_a_records if r["record_id"] in seen}
    )


def last_relearn(stage_b_dir: Path) -> dict | None:
    rows = read_jsonl(stage_b_dir / RELEARN_LOG)
    return rows[-1] if rows else None


def relearn_reason(
    stage_b_dir: Path,
    stage_a_records: list[dict],
    drift: dict | None,
    settings: RelearnSettings,
    now: float | None = None,
) -> str | None:
    """Why re-learning is due now ('drift: ...' or 'new_groups: ...'), or None."""
    now = time.time() if now is None else now
    if not (stage_b_dir / "result.json").exists():
        return None  # the first learning is asked for by a person (or the demo), not by drift
    last = last_relearn(stage_b_dir)
    if last is not None and now - last["at"] < settings.cooldown_s:
        return None
    if drift is not None and drift["drifted"]:
        return drift["status"]  # "drift: upper bound ... < baseline ..."
    new = new_labelled_groups(stage_a_records, stage_b_dir)
    if new >= settings.relearn_after:
        return (
            f"new_groups: {new} labelled groups since the kept guidance was learned "
            f"(relearn_after {settings.relearn_after})"
        )
    return None


def record_relearn(stage_b_dir: Path, run_id: str, reason: str, now: float | None = None) -> None:
    append_jsonl(
        stage_b_dir / RELEARN_LOG, [{"at": time.time() if now is None else now, "run_id": run_id, "reason": reason}]
    )
