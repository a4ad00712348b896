"""`mission_health`: one table across missions, refreshed by declarative automation whenever the
production verdicts or the kept guidance of any mission change (its job: jobs.py)."""

import dagster as dg
import polars as pl

from qc_assets.asset_names import FUSED_SFT_CHECKPOINT, MISSION_HEALTH, QC_VERDICTS, STAGE_A_SUMMARIES, STAGE_B_GUIDANCE
from qc_assets.markdown import md_table
from qc_assets.metadata import column_schema, records_table
from qc_assets.partitions import mission_partitions
from qc_assets.plots import png_markdown
from qc_assets.verdicts.assets import mission_drift
from qc_assets.verdicts.health import mission_row, plot_weekly, sparkline, student_columns
from qc_assets.verdicts.table import read_table
from resources.env import env_number
from resources.storage import StorageResource
from resources.store import atomic_write_parquet, read_jsonl

# Any mission's verdicts or guidance updated since the last refresh, and nothing upstream running;
# eager() minus its "no dependency missing" clause, since a new mission has no verdicts yet.
REFRESH_ON_ANY_MISSION = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("refresh when any mission's verdicts or guidance change")
)


def _fmt(value, interval) -> str:
    return "-" if value is None else f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def health_markdown(rows: list[dict], student: dict) -> str:
    table = md_table(
        [
            "mission",
            "guidance",
            "test acc [95%]",
            "inbox",
            "to review",
            "window agreement [95%]",
            "weekly",
            "drift",
            "last re-learning",
        ],
        [
            (
                r["mission"],
                "-" if r["guidance_version"] is None else f"v{r['guidance_version']}",
                _fmt(r["test_accuracy"], r["test_interval"]) if r["test_accuracy"] is not None else r["test_note"][:30],
                r["inbox_groups"],
                r["pending_review"],
                f"{_fmt(r['agreement'], r['agreement_interval'])} (n={r['window_reviews']})",
                sparkline(r["weekly_agreement"]),
                r["drift"][:60],
                "-"
                if r["last_relearn_at"] is None
                else f"{r['last_relearn_at']}: {r['last_relearn_reason'].split(':')[0]}",
            )
            for r in rows
        ],
    )
    return (
        f"{table}\n\nstudent: {student['student_promoted'] or 'none promoted'} (last gate: {student['student_gate']})"
    )


@dg.asset(
    name=MISSION_HEALTH,
    deps=[dg.AssetKey(QC_VERDICTS), dg.AssetKey(STAGE_B_GUIDANCE)],
    group_name="health",
    kinds={"python", "parquet"},
    automation_condition=REFRESH_ON_ANY_MISSION,
    description="One row per mission: kept guidance and its test accuracy, inbox and review load, agreement with "
    "reviewers over the drift window, drift state, and the promoted student.",
)
def mission_health(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    missions = sorted(context.instance.get_dynamic_partitions(mission_partitions.name))
    root = storage.root()
    rows = [
        mission_row(
            m,
            root,
            mission_drift(storage, m),
            read_table(root / QC_VERDICTS / m),
            read_jsonl(root / QC_VERDICTS / m / "reviews.jsonl"),
            read_jsonl(root / STAGE_A_SUMMARIES / m / "records.jsonl"),
        )
        for m in missions
    ]
    student = student_columns(root / FUSED_SFT_CHECKPOINT)
    rows = [{**r, **student} for r in rows]
    frame = pl.DataFrame(rows, infer_schema_length=None)
    path = atomic_write_parquet(root / MISSION_HEALTH / "health.parquet", frame)
    markdown = health_markdown(rows, student)
    meta = {
        "dagster/row_count": len(rows),
        "health": dg.MetadataValue.md(markdown),
        "preview": dg.MetadataValue.md(markdown[:500]),
        "missions_drifted": sum(r["drifted"] for r in rows),
        "path": dg.MetadataValue.path(str(path)),
        "dagster/column_schema": column_schema(frame.schema),
        # the same missions as a table the UI can sort (the markdown above keeps the intervals and sparklines)
        "missions": records_table(
            rows,
            [
                "mission",
                "guidance_version",
                "test_accuracy",
                "inbox_groups",
                "pending_review",
                "needs_review_share",
                "agreement",
                "window_reviews",
                "drifted",
                "last_relearn_at",
            ],
        ),
    }
    if any(r["weekly_agreement"] for r in rows):
        legend = ", ".join(f"{i + 1} = {r['mission']}" for i, r in enumerate(rows))
        meta["weekly_agreement_plot"] = dg.MetadataValue.md(
            png_markdown(plot_weekly(rows), "agreement per week") + f"\n\n{legend}"
        )
    return dg.MaterializeResult(metadata=meta)


# Evaluates REFRESH_ON_ANY_MISSION under the daemon (`make ui`): the declarative way, no sensor of our own.
health_automation = dg.AutomationConditionSensorDefinition(
    "mission_health_automation",
    target=dg.AssetSelection.assets(mission_health),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=env_number("QC_AUTOMATION_INTERVAL_S", "30", int),
)

assets = [mission_health]
