"""The distill_chatml row contract as a polars frame schema and a pandera schema.

Contract columns (DESIGN.md): group_id, mission, label, guidance_version, messages [system, user,
assistant]. Lineage beside them: record_id, image_sha256, guidance_hash, teacher, sample, copy,
weight, hard_case, and the Step-by-Step split of the answer (answer = verdict, rationale = 理由 line).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from qc_assets.stage_b.verdict import parse_verdict

CONTRACT_VERSION = "distill_chatml/v1"
ROLES = ["system", "user", "assistant"]
MESSAGE = pl.Struct({"role": pl.Utf8, "content": pl.Utf8})

FRAME_SCHEMA: dict[str, pl.DataType] = {
    "group_id": pl.Utf8,
    "mission": pl.Utf8,
    "label": pl.Utf8,
    "guidance_version": pl.Int64,
    "messages": pl.List(MESSAGE),
    "record_id": pl.Utf8,
    "image_sha256": pl.List(pl.Utf8),
    "guidance_hash": pl.Utf8,
    "teacher": pl.Utf8,
    "sample": pl.Int64,
    "copy": pl.Int64,
    "weight": pl.Int64,
    "hard_case": pl.Boolean,
    "answer": pl.Utf8,
    "rationale": pl.Utf8,
}


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows as a typed frame; an empty corpus still has every column with its dtype."""
    return pl.DataFrame([{k: r[k] for k in FRAME_SCHEMA} for r in rows], schema=FRAME_SCHEMA)


def _roles_are_system_user_assistant(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("messages").list.eval(pl.element().struct.field("role")) == pl.lit(ROLES, dtype=pl.List(pl.Utf8))
    )


def _prompt_turns_non_empty(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col("messages")
        .list.eval(pl.element().struct.field("content").str.strip_chars().str.len_chars() > 0)
        .list.all()
    )


def _assistant_obeys_contract(data: pa.PolarsData) -> pl.LazyFrame:
    """The last turn parses under the verdict contract into exactly the row's answer and rationale."""
    frame = data.lazyframe.select("messages", "answer", "rationale").collect()
    ok = []
    for messages, answer, rationale in frame.iter_rows():
        parsed = parse_verdict(messages[-1]["content"] if messages else None)
        ok.append(parsed.format_ok and parsed.verdict == answer and parsed.reason == rationale)
    return pl.LazyFrame({"ok": pl.Series(ok, dtype=pl.Boolean)})


_SHA256 = r"^[0-9a-f]{64}$"

DISTILL_SCHEMA = pa.DataFrameSchema(
    {
        "group_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "mission": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "label": pa.Column(pl.Utf8, pa.Check.isin(["pass", "fail"])),
        "guidance_version": pa.Column(pl.Int64, pa.Check.ge(0)),
        "messages": pa.Column(pl.List(MESSAGE)),
        "record_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "image_sha256": pa.Column(
            pl.List(pl.Utf8),
            pa.Check(
                lambda d: d.lazyframe.select(
                    (pl.col(d.key).list.len() > 0)
                    & pl.col(d.key).list.eval(pl.element().str.contains(_SHA256)).list.all()
                ),
                name="non_empty_list_of_sha256",
            ),
        ),
        "guidance_hash": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "teacher": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "sample": pa.Column(pl.Int64, pa.Check.ge(0)),
        "copy": pa.Column(pl.Int64, pa.Check.ge(0)),
        "weight": pa.Column(pl.Int64, pa.Check.ge(1)),
        "hard_case": pa.Column(pl.Boolean),
        "answer": pa.Column(pl.Utf8, pa.Check.isin(["pass", "fail"])),
        "rationale": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
    },
    checks=[
        pa.Check(_roles_are_system_user_assistant, name="roles_are_system_user_assistant"),
        pa.Check(_prompt_turns_non_empty, name="turns_non_empty"),
        pa.Check(_assistant_obeys_contract, name="assistant_obeys_verdict_contract"),
        pa.Check(lambda d: d.lazyframe.select(pl.col("copy") < pl.col("weight")), name="copy_below_weight"),
    ],
    strict=True,
    name=CONTRACT_VERSION,
)


def validate_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Raise `pandera.errors.SchemaErrors` listing every violation; return the validated frame."""
    return DISTILL_SCHEMA.validate(frame, lazy=True)
