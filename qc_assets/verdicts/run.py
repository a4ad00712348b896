"""One production-verdict run for a mission: judge the inbox, close reviews, write the table.

Inputs: the inbox records (Stage-A summaries, label null), the group folders waiting in the inbox,
the kept guidance and the verdict model. Output under `out_dir`: `verdicts.parquet`, `verdicts.csv`,
`samples.jsonl` (the per-sample cache), `reviews.jsonl` and `summary.json` (what the checks read).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qc_assets.stage_a.discovery import DEFAULT_GROUP_ID_PATTERN, compile_group_id_pattern, group_id_of
from qc_assets.stage_a.records import record_id
from qc_assets.stage_b.guidance import Guidance
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.judge import JudgeCounts, VerdictJudge
from qc_assets.verdicts.reviews import close_reviews
from qc_assets.verdicts.table import read_table, rejudge_reason, verdict_frame, write_tables
from resources.llm import ChatLLM
from resources.store import atomic_write_json, read_jsonl

NO_RECORD_REASON = "no usable photo in this group: see inbox_summaries skipped.jsonl"
_STATUS_ORDER = {"pending": 0, "reviewed": 1, "withdrawn": 2}


@dataclass
class VerdictsResult:
    rows: list[dict]
    counts: JudgeCounts
    newly_judged: int = 0
    unchanged: int = 0
    rejudged: Counter = field(default_factory=Counter)  # reason -> groups
    changed: int = 0  # groups still pending whose verdict differs from the last run's (e.g. a new guidance)
    new_reviews: int = 0
    reviews: list[dict] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def pending(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "pending"]


def inbox_groups(
    records: Sequence[dict], skipped: Sequence[dict], pattern: str = DEFAULT_GROUP_ID_PATTERN
) -> dict[str, int]:
    """Every inbox group Stage-A saw, with the number of its photos that were unusable: groups with a
    record, and groups whose photos were all skipped.

    Skipped paths are relative to the mission folder: `待审核/<folder>/<file>` or `待审核/<folder>`; the
    folder's group id comes from `pattern`, as Stage-A extracted it.
    """
    groups = dict.fromkeys((r["group_id"] for r in records), 0)
    compiled = compile_group_id_pattern(pattern)
    for s in skipped:
        parts = s["path"].split("/")
        if len(parts) >= 3:
            group = group_id_of(parts[1], compiled)
            groups[group] = groups.get(group, 0) + 1
        elif len(parts) == 2 and s["reason"] == "group has no usable images":
            groups.setdefault(group_id_of(parts[1], compiled), 0)
    return dict(sorted(groups.items()))


def partial_evidence(row: dict, n_usable: int, n_unusable: int) -> dict:
    """A verdict on some of a group's photos is not a verdict on the group: a reviewer looks at it."""
    reason = f"{n_unusable} of {n_usable + n_unusable} photos unusable (see inbox_summaries skipped.jsonl)"
    return {**row, "needs_review": True, "review_reason": "; ".join(filter(None, [row["review_reason"], reason]))}


def run_verdicts(
    records: Sequence[dict],
    inbox: dict[str, int],
    mission,
    guidance: Guidance,
    llm: ChatLLM,
    config: VerdictConfig,
    out_dir: str | Path,
    mission_dir: str | Path,
    log: Callable[[str], None] = print,
    group_id_pattern: str = DEFAULT_GROUP_ID_PATTERN,
) -> VerdictsResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unlabelled = [r["group_id"] for r in records if r.get("label") is not None]
    if unlabelled:
        raise ValueError(f"inbox records must have label null, got labelled groups {unlabelled[:3]}")
    without = [r["group_id"] for r in records if "truncated_images" not in r]
    if without:  # written before Stage-A counted cut summaries: a cut one would pass unnoticed
        raise ValueError(
            f"inbox records without truncated_images (e.g. {without[:3]}): expected records written "
            f"by the current Stage-A; re-materialize inbox_summaries"
        )
    previous = {r["record_id"]: r for r in read_table(out_dir)}
    judge = VerdictJudge(llm, mission, guidance, config, out_dir, log=log)
    pending = [
        partial_evidence(row, len(rec["images"]), inbox[rec["group_id"]]) if inbox.get(rec["group_id"]) else row
        for rec, row in zip(records, judge.judge(records), strict=True)
    ]
    summarised = {r["group_id"] for r in records}
    pending += [
        judge.unjudgeable_row(record_id(mission.name, None, g), g, NO_RECORD_REASON)
        for g in inbox
        if g not in summarised
    ]
    result = VerdictsResult(rows=[], counts=judge.counts)
    for row in pending:
        before = previous.get(row["record_id"])
        if before is None or before["status"] != "pending":
            result.newly_judged += 1
        elif (reason := rejudge_reason(before, row)) is not None:
            result.rejudged[reason] += 1
            result.changed += before["verdict"] != row["verdict"]
        else:
            result.unchanged += 1
    now = {r["record_id"] for r in pending}
    left = [r for r in previous.values() if r["record_id"] not in now and r["status"] != "reviewed"]
    closed, result.new_reviews = close_reviews(left, Path(mission_dir), out_dir / "reviews.jsonl", group_id_pattern)
    kept = [r for r in previous.values() if r["record_id"] not in now and r["status"] == "reviewed"]
    result.rows = sorted(pending + closed + kept, key=lambda r: (_STATUS_ORDER[r["status"]], r["group_id"]))
    result.reviews = read_jsonl(out_dir / "reviews.jsonl")
    parquet, csv = write_tables(verdict_frame(result.rows), out_dir)
    result.paths = {"parquet": parquet, "csv": csv, "samples": judge.path, "reviews": out_dir / "reviews.jsonl"}
    atomic_write_json(
        out_dir / "summary.json",
        {
            "inbox_group_ids": sorted(inbox),
            "guidance_version": guidance.version,
            "guidance_hash": guidance.content_hash(),
            "model_fingerprint": llm.fingerprint,
            "max_needs_review_share": config.max_needs_review_share,
            "config": config.to_dict(),
        },
    )
    log(
        f"{mission.name}: {len(pending)} inbox groups ({result.newly_judged} new, {sum(result.rejudged.values())} "
        f"re-judged, {result.unchanged} unchanged), {judge.counts.llm_calls} LLM calls, "
        f"{result.new_reviews} new reviews"
    )
    return result
