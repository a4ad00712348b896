"""The verdict table: its pandera schema, its files (parquet + a CSV for reviewers), and what changed.

Contract columns (DESIGN.md): group_id, verdict (pass|fail|null), reason, agreement, format_ok,
needs_review, review_reason, guidance_version, guidance_hash, model_fingerprint, record_id,
image_sha256s. Beside them: the mission, the decode plan, vote counts, `status` (`pending` = waiting
in the inbox, `reviewed` = a reviewer filed it under a label folder, `withdrawn` = it left the inbox
without a label), and for reviewed rows the reviewer's label and whether the machine agreed.
"""

from __future__ import annotations

from pathlib import Path

import pandera.polars as pa
import polars as pl

from resources.store import atomic_write_bytes, atomic_write_parquet

CONTRACT_VERSION = "qc_verdicts/v1"
STATUSES = ("pending", "reviewed", "withdrawn")

COLUMNS = {
    "group_id": pl.Utf8,
    "mission": pl.Utf8,
    "verdict": pl.Utf8,
    "reason": pl.Utf8,
    "agreement": pl.Float64,
    "format_ok": pl.Boolean,
    "needs_review": pl.Boolean,
    "review_reason": pl.Utf8,
    "guidance_version": pl.Int64,
    "guidance_hash": pl.Utf8,
    "model_fingerprint": pl.Utf8,
    "decode_plan": pl.Utf8,
    "verdict_model": pl.Utf8,
    "record_id": pl.Utf8,
    "image_sha256s": pl.List(pl.Utf8),
    "n_samples": pl.Int64,
    "n_pass": pl.Int64,
    "n_fail": pl.Int64,
    "n_invalid": pl.Int64,
    "n_failed": pl.Int64,
    "judged_at": pl.Float64,
    "status": pl.Utf8,
    "reviewer_label": pl.Utf8,
    "agrees_with_reviewer": pl.Boolean,
    "reviewed_at": pl.Float64,
}


def _null_verdict_needs_review(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col("verdict").is_not_null() | pl.col("needs_review"))


def _review_has_reason(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        ~pl.col("needs_review") | (pl.col("review_reason").str.len_chars() > 0).fill_null(False)
    )


def _clean_pass_is_well_formed(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col("needs_review") | pl.col("format_ok"))


def _reviewed_rows_say_so(data: pa.PolarsData) -> pl.LazyFrame:
    reviewed = pl.col("status") == "reviewed"
    return data.lazyframe.select(
        ~reviewed | (pl.col("reviewer_label").is_not_null() & pl.col("agrees_with_reviewer").is_not_null())
    )


VERDICT_SCHEMA = pa.DataFrameSchema(
    {
        "group_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "verdict": pa.Column(pl.Utf8, pa.Check.isin(["pass", "fail"]), nullable=True),
        "reason": pa.Column(pl.Utf8, nullable=True),
        "agreement": pa.Column(pl.Float64, pa.Check.in_range(0.0, 1.0)),
        "format_ok": pa.Column(pl.Boolean),
        "needs_review": pa.Column(pl.Boolean),
        "review_reason": pa.Column(pl.Utf8, nullable=True),
        "guidance_version": pa.Column(pl.Int64, pa.Check.ge(0)),
        "guidance_hash": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "model_fingerprint": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "record_id": pa.Column(pl.Utf8, unique=True),
        "image_sha256s": pa.Column(pl.List(pl.Utf8)),
        "status": pa.Column(pl.Utf8, pa.Check.isin(list(STATUSES))),
        "reviewer_label": pa.Column(pl.Utf8, pa.Check.isin(["pass", "fail"]), nullable=True),
        "agrees_with_reviewer": pa.Column(pl.Boolean, nullable=True),
    },
    checks=[
        pa.Check(_null_verdict_needs_review, name="null_verdict_needs_review"),
        pa.Check(_review_has_reason, name="needs_review_has_a_reason"),
        pa.Check(_clean_pass_is_well_formed, name="unflagged_rows_are_well_formed"),
        pa.Check(_reviewed_rows_say_so, name="reviewed_rows_record_agreement"),
    ],
    name=CONTRACT_VERSION,
)


def verdict_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], schema=COLUMNS)


def validate_verdicts(frame: pl.DataFrame) -> pl.DataFrame:
    """Raise `pandera.errors.SchemaErrors` listing every violation."""
    return VERDICT_SCHEMA.validate(frame, lazy=True)


def write_tables(frame: pl.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """verdicts.parquet, and verdicts.csv in UTF-8 with a BOM so Excel shows the Chinese text."""
    parquet = atomic_write_parquet(out_dir / "verdicts.parquet", frame)
    flat = frame.with_columns(pl.col("image_sha256s").list.join(";"))
    csv = atomic_write_bytes(out_dir / "verdicts.csv", flat.write_csv().encode("utf-8-sig"))
    return parquet, csv


def read_table(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / "verdicts.parquet"
    return pl.read_parquet(path).to_dicts() if path.exists() else []


def rejudge_reason(previous: dict, row: dict) -> str | None:
    """Why a group already judged before got a new verdict now (None when nothing changed)."""
    reasons = []
    if previous["guidance_hash"] != row["guidance_hash"]:
        reasons.append(f"guidance v{previous['guidance_version']} -> v{row['guidance_version']}")
    if previous["model_fingerprint"] != row["model_fingerprint"]:
        reasons.append("new model")
    if list(previous["image_sha256s"]) != list(row["image_sha256s"]):
        reasons.append("photos changed")
    if previous["decode_plan"] != row["decode_plan"]:
        reasons.append("decode plan changed")
    return ", ".join(reasons) or None
