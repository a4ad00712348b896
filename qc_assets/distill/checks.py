"""Quality gates on `distill_chatml`: the corpus's schema (blocking), label agreement, label balance and
unique rows; expected vs actual in metadata."""

import json

import dagster as dg
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from qc_assets.asset_names import DISTILL_CHATML
from qc_assets.distill.assets import distill_chatml
from qc_assets.distill.config import DistillConfig
from qc_assets.distill.export import CHATML_PARQUET
from qc_assets.distill.schema import validate_frame
from qc_assets.stage_b.verdict import parse_verdict
from resources.storage import StorageResource


def _read_corpus(storage: StorageResource, mission: str) -> pl.DataFrame | None:
    path = storage.root() / DISTILL_CHATML / mission / CHATML_PARQUET
    return pl.read_parquet(path) if path.exists() else None


def _missing(path_hint: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, metadata={"expected": path_hint, "actual": "missing"})


@dg.asset_check(
    asset=distill_chatml, blocking=True, description="Every row satisfies the distill_chatml contract (pandera schema)."
)
def distill_chatml_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    try:
        validate_frame(frame)
    except (SchemaErrors, SchemaError) as e:
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "expected": "rows satisfy the distill_chatml/v1 schema",
                "rows": frame.height,
                "errors": str(e)[:2000],
            },
        )
    return dg.AssetCheckResult(
        passed=True,
        metadata={"expected": "rows satisfy the distill_chatml/v1 schema", "actual": "ok", "rows": frame.height},
    )


@dg.asset_check(asset=distill_chatml, description="Every assistant verdict equals the group's label (100%).")
def distill_chatml_label_agreement(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    agree = sum(
        parse_verdict(m[-1]["content"]).verdict == label for m, label in frame.select("messages", "label").iter_rows()
    )
    rate = agree / frame.height if frame.height else None
    return dg.AssetCheckResult(
        passed=agree == frame.height,
        metadata={
            "expected_agreement": 1.0,
            "actual_agreement": rate,
            "rows": frame.height,
            "disagreeing_rows": frame.height - agree,
            "note": "empty corpus: nothing to disagree" if frame.height == 0 else "",
        },
    )


@dg.asset_check(asset=distill_chatml, description="Each label's share of rows is within the configured band.")
def distill_chatml_label_balance(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    summary_path = storage.root() / DISTILL_CHATML / context.partition_key / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    band = float(summary.get("config", {}).get("min_label_share", DistillConfig().min_label_share))
    counts = {label: frame.filter(pl.col("label") == label).height for label in ("pass", "fail")}
    if frame.height == 0:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "expected_min_share": band,
                "actual": "empty corpus: no row kept, balance undefined",
                "rows_pass": 0,
                "rows_fail": 0,
            },
        )
    shares = {label: n / frame.height for label, n in counts.items()}
    return dg.AssetCheckResult(
        passed=min(shares.values()) >= band,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expected_min_share": band,
            "actual_pass_share": shares["pass"],
            "actual_fail_share": shares["fail"],
            "rows_pass": counts["pass"],
            "rows_fail": counts["fail"],
        },
    )


@dg.asset_check(asset=distill_chatml, description="No duplicate (group_id, record_id, sample, copy) rows.")
def distill_chatml_unique_rows(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    key = ["group_id", "record_id", "sample", "copy"]
    dupes = frame.height - frame.select(key).unique().height
    return dg.AssetCheckResult(
        passed=dupes == 0,
        metadata={"key": ", ".join(key), "expected_duplicates": 0, "actual_duplicates": dupes, "rows": frame.height},
    )


asset_checks = [
    distill_chatml_schema,
    distill_chatml_label_agreement,
    distill_chatml_label_balance,
    distill_chatml_unique_rows,
]
