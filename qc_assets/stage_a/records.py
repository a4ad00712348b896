"""The Stage-A record contract (DESIGN.md), its pandera schema, and summary-quality helpers.

Contract columns: group_id, mission, label (pass|fail), images (paths relative to the mission
folder), per_image {image_1..image_N: non-empty str}. Provenance (record_id, image hashes, model
fingerprint, prompt hash, decode params) sits beside the contract, not inside per_image.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import pandera.polars as pa
import polars as pl

from qc_assets.stage_a.discovery import INBOX_KEY

CONTRACT_VERSION = "stage_a/v1"
_CJK_OR_WORD = re.compile(r"[\u4e00-\u9fff]|[A-Za-z]{2,}")


def record_id(mission: str, label: str | None, group_id: str) -> str:
    """Stable per group occurrence; an inbox group (label None) has its own id, apart from both labels."""
    return hashlib.sha256(f"{mission}\x00{label or INBOX_KEY}\x00{group_id}".encode()).hexdigest()[:16]


def image_keys(n: int) -> list[str]:
    return [f"image_{i}" for i in range(1, n + 1)]


def is_degenerate(text: str) -> bool:
    """A summary nobody could use: too short, no words, or one character repeated."""
    stripped = "".join(text.split())
    if len(stripped) < 4 or not _CJK_OR_WORD.search(stripped):
        return True
    return Counter(stripped).most_common(1)[0][1] / len(stripped) > 0.5


def _keys_match_images(data: pa.PolarsData) -> pl.LazyFrame:
    expected = pl.int_ranges(1, pl.col("images").list.len() + 1).list.eval(
        pl.lit("image_") + pl.element().cast(pl.Utf8)
    )
    return data.lazyframe.select(pl.col("per_image_keys") == expected)


def _summaries_non_empty(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("per_image_values").list.eval(pl.element().str.strip_chars().str.len_chars() > 0).list.all()
    )


def _record_schema(label: pa.Column, extra_checks: list, name: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "group_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
            "mission": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
            "label": label,
            "images": pa.Column(
                pl.List(pl.Utf8),
                pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).list.len() > 0), name="at_least_one_image"),
            ),
            "per_image_keys": pa.Column(pl.List(pl.Utf8)),
            "per_image_values": pa.Column(pl.List(pl.Utf8)),
            "record_id": pa.Column(pl.Utf8, unique=True),
        },
        checks=[
            pa.Check(_keys_match_images, name="per_image_keys_are_image_1_to_N"),
            pa.Check(_summaries_non_empty, name="per_image_summaries_non_empty"),
            *extra_checks,
        ],
        name=name,
    )


STAGE_A_SCHEMA = _record_schema(pa.Column(pl.Utf8, pa.Check.isin(["pass", "fail"])), [], CONTRACT_VERSION)
# Inbox records (under INBOX_FOLDER): the same contract, except that the label is null, always.
INBOX_SCHEMA = _record_schema(
    pa.Column(pl.Utf8, nullable=True),
    [pa.Check(lambda d: d.lazyframe.select(pl.col("label").is_null()), name="inbox_label_is_null")],
    f"{CONTRACT_VERSION}/inbox",
)


def records_frame(records: list[dict]) -> pl.DataFrame:
    """Flatten records so per_image (a dict with varying keys) becomes two aligned list columns."""
    return pl.DataFrame(
        {
            "group_id": [r["group_id"] for r in records],
            "mission": [r["mission"] for r in records],
            "label": [r["label"] for r in records],
            "images": [list(r["images"]) for r in records],
            "per_image_keys": [list(r["per_image"].keys()) for r in records],
            "per_image_values": [list(r["per_image"].values()) for r in records],
            "record_id": [r["record_id"] for r in records],
        },
        schema={
            "group_id": pl.Utf8,
            "mission": pl.Utf8,
            "label": pl.Utf8,
            "images": pl.List(pl.Utf8),
            "per_image_keys": pl.List(pl.Utf8),
            "per_image_values": pl.List(pl.Utf8),
            "record_id": pl.Utf8,
        },
    )


def validate_records(records: list[dict], inbox: bool = False) -> pl.DataFrame:
    """Raise `pandera.errors.SchemaErrors` listing every violation; return the validated frame.

    `inbox=True` validates inbox records (label null) instead of labelled ones (label pass|fail).
    """
    return (INBOX_SCHEMA if inbox else STAGE_A_SCHEMA).validate(records_frame(records), lazy=True)
