"""Quality gates on the production path: the inbox summaries (the Stage-A checks, qc_assets/stage_a/checks.py,
with `inbox=True`) and `qc_verdicts`; one invariant per check, expected vs actual in metadata."""

from collections import Counter

import dagster as dg
import pandera.errors

from qc_assets.asset_names import INBOX_SUMMARIES, QC_VERDICTS
from qc_assets.markdown import md_table
from qc_assets.stage_a.checks import images_accounted, records_schema, truncation_share
from qc_assets.stage_a.discovery import INBOX_FOLDER
from qc_assets.verdicts.assets import mission_drift, qc_verdicts, read_summary
from qc_assets.verdicts.inbox import inbox_group_id_pattern, inbox_summaries
from qc_assets.verdicts.reviews import inbox_group_ids
from qc_assets.verdicts.table import read_table, validate_verdicts, verdict_frame
from resources.storage import StorageResource


@dg.asset_check(
    asset=inbox_summaries,
    blocking=True,
    description="Inbox records satisfy the Stage-A contract with a null label (pandera schema).",
)
def inbox_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return records_schema(storage, context.partition_key, inbox=True)


@dg.asset_check(
    asset=inbox_summaries, description=f"Every file under <mission>/{INBOX_FOLDER}/ is summarised or listed as skipped."
)
def inbox_images_accounted(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return images_accounted(storage, context.partition_key, inbox=True)


@dg.asset_check(
    asset=inbox_summaries,
    description="Share of inbox summaries cut at max_new_tokens (WARN / ERROR as for Stage-A). Not "
    "blocking: qc_verdicts sends every group with a cut summary to review.",
)
def inbox_truncation_share(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return truncation_share(storage, context.partition_key, INBOX_SUMMARIES)


@dg.asset_check(asset=qc_verdicts, blocking=True, description="The verdict table satisfies its contract (pandera).")
def qc_verdicts_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return verdicts_schema(storage, context.partition_key)


def verdicts_schema(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    rows = read_table(storage.root() / QC_VERDICTS / mission)
    try:
        validate_verdicts(verdict_frame(rows))
    except pandera.errors.SchemaErrors as e:
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "rows": len(rows),
                "failures": len(e.failure_cases),
                "errors": dg.MetadataValue.md(f"```\n{str(e)[:3000]}\n```"),
            },
        )
    return dg.AssetCheckResult(passed=True, metadata={"rows": len(rows), "expected": "every row valid"})


@dg.asset_check(
    asset=qc_verdicts,
    blocking=True,
    description="Every group waiting in the inbox has exactly one pending verdict row, and no other.",
)
def qc_verdicts_one_row_per_inbox_group(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    return one_row_per_inbox_group(storage, context.partition_key)


def one_row_per_inbox_group(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    rows = [r for r in read_table(storage.root() / QC_VERDICTS / mission) if r["status"] == "pending"]
    pattern = inbox_group_id_pattern(storage, mission)
    if pattern is None:
        return dg.AssetCheckResult(
            passed=False,
            metadata={"expected": f"{INBOX_SUMMARIES}/{mission}/run.json (its group_id_pattern)", "actual": "missing"},
        )
    waiting = set(inbox_group_ids(storage.images(), mission, pattern))
    counts = Counter(r["group_id"] for r in rows)
    missing = sorted(waiting - set(counts))
    duplicated = sorted(g for g, n in counts.items() if n > 1)
    extra = sorted(set(counts) - waiting)
    return dg.AssetCheckResult(
        passed=not (missing or duplicated or extra),
        metadata={
            "inbox_groups": len(waiting),
            "pending_rows": len(rows),
            "expected": "one pending row per inbox group",
            "missing": ", ".join(missing[:10]),
            "duplicated": ", ".join(duplicated[:10]),
            "not_in_inbox": ", ".join(extra[:10]),
        },
    )


@dg.asset_check(
    asset=qc_verdicts,
    description="Share of inbox groups that need review is at most the configured "
    "max_needs_review_share (a warning: the model or guidance struggles).",
)
def qc_verdicts_needs_review_share(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    return needs_review_share(storage, context.partition_key)


def needs_review_share(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    summary = read_summary(storage, mission)
    if summary is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"expected": "summary.json", "actual": "missing"},
        )
    rows = [r for r in read_table(storage.root() / QC_VERDICTS / mission) if r["status"] == "pending"]
    share = sum(r["needs_review"] for r in rows) / len(rows) if rows else 0.0
    limit = summary["max_needs_review_share"]
    return dg.AssetCheckResult(
        passed=share <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"expected_max_share": limit, "actual_share": round(share, 4), "pending_rows": len(rows)},
    )


@dg.asset_check(
    asset=qc_verdicts,
    description="Agreement with reviewers over the recent window holds up against "
    "what the kept guidance showed on Stage-B's test split (drift watch).",
)
def qc_verdicts_agreement_holds(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    return agreement_holds(storage, context.partition_key)


def agreement_holds(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    state = mission_drift(storage, mission)
    if state is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"expected": "summary.json", "actual": "missing"},
        )
    low, high = state["interval"]
    flagged = state["needs_review_in_window"]
    metadata = {
        "status": state["status"],
        "window_reviews": state["window_reviews"],
        "agreement": state["agreement"],
        "interval_low": low,
        "interval_high": high,
        "interval_method": state["interval_method"],
        "baseline": state["baseline"],
        "baseline_source": state["baseline_source"],
        "drift_margin": state["drift_margin"],
        "needs_review_overturned_share": round(state["needs_review_overturned"] / flagged, 4) if flagged else None,
        "needs_review_confirmed_share": round(state["needs_review_confirmed"] / flagged, 4) if flagged else None,
        "recent_disagreements": dg.MetadataValue.md(
            md_table(
                ["group", "machine", "reviewer", "reason"],
                [
                    (d["group_id"], d["machine"] or "-", d["reviewer"], (d["reason"] or "")[:40])
                    for d in state["recent_disagreements"]
                ],
            )
        ),
    }
    return dg.AssetCheckResult(
        passed=not state["drifted"], severity=dg.AssetCheckSeverity[state["severity"]], metadata=metadata
    )


inbox_checks = [inbox_schema, inbox_images_accounted, inbox_truncation_share]
verdict_checks = [
    qc_verdicts_schema,
    qc_verdicts_one_row_per_inbox_group,
    qc_verdicts_needs_review_share,
    qc_verdicts_agreement_holds,
]
asset_checks = [*inbox_checks, *verdict_checks]
