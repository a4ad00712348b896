"""Quality gates on `stage_a_summaries`: one invariant per check, expected vs actual in metadata. The
inbox summaries' checks (qc_assets/verdicts/checks.py) call the same functions with `inbox=True`."""

import json

import dagster as dg
import pandera.errors

from qc_assets.asset_names import INBOX_SUMMARIES, STAGE_A_SUMMARIES
from qc_assets.stage_a.assets import stage_a_summaries
from qc_assets.stage_a.discovery import INBOX_FOLDER, unaccounted_files
from qc_assets.stage_a.records import is_degenerate, validate_records
from resources.storage import StorageResource
from resources.store import read_jsonl

MAX_DEGENERATE_SHARE = 0.2


def _load(storage: StorageResource, mission: str, asset: str = STAGE_A_SUMMARIES) -> tuple[list[dict], list[dict]]:
    out = storage.asset_dir(asset, mission)
    return read_jsonl(out / "records.jsonl"), read_jsonl(out / "skipped.jsonl")


@dg.asset_check(
    asset=stage_a_summaries, blocking=True, description="Records satisfy the Stage-A contract (pandera schema)."
)
def stage_a_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return records_schema(storage, context.partition_key, inbox=False)


def records_schema(storage: StorageResource, mission: str, inbox: bool) -> dg.AssetCheckResult:
    records, _ = _load(storage, mission, INBOX_SUMMARIES if inbox else STAGE_A_SUMMARIES)
    try:
        validate_records(records, inbox=inbox)
    except pandera.errors.SchemaErrors as e:
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "records": len(records),
                "failures": len(e.failure_cases),
                "errors": dg.MetadataValue.md(f"```\n{str(e)[:3000]}\n```"),
            },
        )
    # an empty inbox is normal (nothing waiting); an empty labelled set is not
    minimum = 0 if inbox else 1
    return dg.AssetCheckResult(
        passed=len(records) >= minimum, metadata={"records": len(records), "expected": f">= {minimum} valid"}
    )


@dg.asset_check(
    asset=stage_a_summaries, description="Every file under the mission folder is summarised or listed as skipped."
)
def stage_a_images_accounted(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return images_accounted(storage, context.partition_key)


def images_accounted(storage: StorageResource, mission: str, inbox: bool = False) -> dg.AssetCheckResult:
    records, skipped = _load(storage, mission, INBOX_SUMMARIES if inbox else STAGE_A_SUMMARIES)
    summarised = {path for r in records for path in r["images"]}
    mission_dir = storage.images() / mission
    if inbox and not (mission_dir / INBOX_FOLDER).is_dir():
        missing = []  # no inbox folder: nothing waiting, nothing to account for
    else:
        missing = unaccounted_files(
            mission_dir, summarised, {s["path"] for s in skipped}, subdir=INBOX_FOLDER if inbox else ""
        )
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "summarised": len(summarised),
            "skipped": len(skipped),
            "expected_unaccounted": 0,
            "actual_unaccounted": len(missing),
            "unaccounted_examples": ", ".join(missing[:10]),
        },
    )


@dg.asset_check(
    asset=stage_a_summaries, description=f"Share of empty or degenerate summaries is at most {MAX_DEGENERATE_SHARE}."
)
def stage_a_degenerate_share(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    records, skipped = _load(storage, context.partition_key)
    texts = [t for r in records for t in r["per_image"].values()]
    empty = sum(1 for s in skipped if s["reason"] == "model returned an empty summary")
    bad = sum(is_degenerate(t) for t in texts) + empty
    share = bad / (len(texts) + empty) if texts or empty else 1.0
    return dg.AssetCheckResult(
        passed=share <= MAX_DEGENERATE_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expected_max_share": MAX_DEGENERATE_SHARE,
            "actual_share": round(share, 4),
            "degenerate_or_empty": bad,
            "summaries": len(texts) + empty,
        },
    )


@dg.asset_check(
    asset=stage_a_summaries,
    blocking=True,
    description="Share of summaries cut at max_new_tokens: WARN above max_truncated_share, ERROR "
    "(blocks Stage-B) above max_truncated_share_blocking.",
)
def stage_a_truncation_share(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return truncation_share(storage, context.partition_key, STAGE_A_SUMMARIES)


def truncation_share(storage: StorageResource, mission: str, asset: str) -> dg.AssetCheckResult:
    """Counted from the records (what downstream reads); thresholds from the run that wrote them (run.json).

    One check, two thresholds: Dagster gives a check one severity per result, so the severity is picked
    from the data; only ERROR stops downstream assets of a blocking check.
    """
    out = storage.asset_dir(asset, mission)
    run_path = out / "run.json"
    if not run_path.exists():
        return dg.AssetCheckResult(
            passed=False,
            metadata={"expected": "run.json written by the asset", "actual": "missing", "path": str(run_path)},
        )
    run = json.loads(run_path.read_text(encoding="utf-8"))
    records = read_jsonl(out / "records.jsonl")
    summaries = sum(len(r["per_image"]) for r in records)
    truncated = sum(r["truncated_images"] for r in records)
    share = truncated / summaries if summaries else 0.0
    warn, block = run["max_truncated_share"], run["max_truncated_share_blocking"]
    severity = dg.AssetCheckSeverity.ERROR if share > block else dg.AssetCheckSeverity.WARN
    worst = sorted((r for r in records if r["truncated_images"]), key=lambda r: -r["truncated_images"])[:10]
    return dg.AssetCheckResult(
        passed=share <= warn,
        severity=severity,
        metadata={
            "expected_max_share": warn,
            "blocking_above_share": block,
            "actual_share": round(share, 4),
            "truncated_images": truncated,
            "summaries": summaries,
            "max_new_tokens": run["max_new_tokens"],
            "groups_with_truncation": ", ".join(f"{r['label'] or 'inbox'}/{r['group_id']}" for r in worst),
        },
    )


asset_checks = [stage_a_schema, stage_a_images_accounted, stage_a_degenerate_share, stage_a_truncation_share]
