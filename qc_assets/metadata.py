"""Dagster metadata built the same way everywhere: a parquet output's column schema and sortable tables.

Markdown previews stay in `qc_assets.markdown` (no Dagster there, plain modules render them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
import polars as pl

COLUMN_SCHEMA = "dagster/column_schema"


def column_schema(schema: Mapping[str, pl.DataType]) -> dg.TableSchema:
    """A polars schema as Dagster's table schema: one column per field, the polars dtype as its type."""
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])


def parquet_column_schema(path: str | Path) -> dict[str, dg.TableSchema]:
    """`{"dagster/column_schema": ...}` read from the footer of the parquet file an asset wrote; empty when
    the file was not written (an empty export), so it can be splatted into the metadata either way."""
    path = Path(path)
    return {COLUMN_SCHEMA: column_schema(pl.read_parquet_schema(path))} if path.is_file() else {}


def _cell(value) -> str | int | float | bool | None:
    if isinstance(value, float):
        return round(value, 4)
    return value if isinstance(value, int | str | bool) else ("" if value is None else str(value))


def _column_type(values: Sequence) -> str:
    """Dagster's own type names; a column of ints and floats is float, any other mix is text."""
    kinds = {dg.TableMetadataValue.infer_column_type(v) for v in values if v is not None and v != ""}
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "string"


def records_table(rows: Sequence[Mapping], columns: Sequence[str]) -> dg.TableMetadataValue:
    """Rows as a Dagster table (the UI shows and sorts it) with a typed schema: floats rounded to 4
    places, other non-scalar values as text, None as an empty string."""
    cells = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, _column_type([row[c] for row in cells])) for c in columns])
    return dg.MetadataValue.table(records=[dg.TableRecord(row) for row in cells], schema=schema)
