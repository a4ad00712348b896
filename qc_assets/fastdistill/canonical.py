"""Stable identities for FastDistill samples (seed 004 data contract).

- `canonical_input`: JSON of the key fields with sorted keys, compact separators, NFC-normalised
  text and surrounding whitespace stripped, non-ASCII kept as is.
- `schema_hash`: sha256 of the (NFC-normalised) schema text.
- `decode_profile`: the decode parameters as canonical JSON.
- `sample_id`: sha256 of `task_id | schema_hash | canonical_input | decode_profile`.

`canonicalize_frame` does the same for a polars frame with vectorised string work, and
`dedup_frame` keeps the first row per sample_id; both agree exactly with the per-row functions.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence

import polars as pl

KEY_FIELDS = ("db_id", "question")


def _norm_text(value):
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    return value


def canonical_json(obj: Mapping) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_input(record: Mapping, key_fields: Sequence[str] = KEY_FIELDS) -> str:
    missing = [k for k in key_fields if k not in record]
    if missing:
        raise ValueError(f"record lacks key fields {missing}; expected {list(key_fields)}")
    return canonical_json({k: _norm_text(record[k]) for k in key_fields})


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def schema_hash(schema: str) -> str:
    return sha256_hex(unicodedata.normalize("NFC", schema).strip())


def decode_profile(params: Mapping | object) -> str:
    as_dict = params if isinstance(params, Mapping) else params.as_dict()
    return canonical_json(dict(as_dict))


def sample_id(task_id: str, schema_hash_hex: str, canonical: str, profile: str) -> str:
    return sha256_hex("|".join((task_id, schema_hash_hex, canonical, profile)))


def with_ids(record: Mapping, profile: str, key_fields: Sequence[str] = KEY_FIELDS) -> dict:
    """The record plus canonical_input, schema_hash, decode_profile and sample_id."""
    canonical = canonical_input(record, key_fields)
    s_hash = schema_hash(record["schema"])
    return {
        **record,
        "canonical_input": canonical,
        "schema_hash": s_hash,
        "decode_profile": profile,
        "sample_id": sample_id(record["task_id"], s_hash, canonical, profile),
    }


def _hash_series(series: pl.Series) -> pl.Series:
    return pl.Series([hashlib.sha256(s.encode("utf-8")).hexdigest() for s in series], dtype=pl.String)


def _with_keys(df: pl.DataFrame, profile: str, key_fields: Sequence[str]) -> pl.DataFrame:
    for k in (*key_fields, "task_id", "schema"):
        if k not in df.columns:
            raise ValueError(f"frame lacks column {k!r}; expected {sorted({*key_fields, 'task_id', 'schema'})}")
        if df.schema[k] != pl.String:
            raise ValueError(f"column {k!r} must be String for canonicalize_frame, got {df.schema[k]}")
    ordered = sorted(key_fields)
    norm = [pl.col(k).str.normalize("NFC").str.strip_chars() for k in ordered]
    out = df.with_columns(
        canonical_input=pl.struct([e.alias(k) for e, k in zip(norm, ordered, strict=True)]).struct.json_encode(),
        _schema_norm=pl.col("schema").str.normalize("NFC").str.strip_chars(),
    )
    schemas = out.select(pl.col("_schema_norm").unique())
    schemas = schemas.with_columns(schema_hash=_hash_series(schemas["_schema_norm"]))
    out = out.join(schemas, on="_schema_norm", how="left", maintain_order="left").drop("_schema_norm")
    keys = pl.concat_str(
        [pl.col("task_id"), pl.col("schema_hash"), pl.col("canonical_input"), pl.lit(profile)], separator="|"
    )
    return out.with_columns(decode_profile=pl.lit(profile), _key=keys)


def canonicalize_frame(df: pl.DataFrame, profile: str, key_fields: Sequence[str] = KEY_FIELDS) -> pl.DataFrame:
    """Vectorised `with_ids` for string key fields: NFC + strip + JSON encode in polars; sha256
    (which polars lacks) in one tight loop per row."""
    out = _with_keys(df, profile, key_fields)
    return out.with_columns(sample_id=_hash_series(out["_key"])).drop("_key")


def canonical_dedup_frame(
    df: pl.DataFrame, profile: str, key_fields: Sequence[str] = KEY_FIELDS
) -> tuple[pl.DataFrame, int]:
    """Canonicalize and keep the first row per sample_id, hashing only the unique keys (equal
    keys give equal sha256, so deduplicating on the key first is exact); returns (frame, dropped)."""
    out = _with_keys(df, profile, key_fields)
    kept = out.unique(subset="_key", keep="first", maintain_order=True)
    kept = kept.with_columns(sample_id=_hash_series(kept["_key"])).drop("_key")
    return kept, df.height - kept.height


def dedup_frame(df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Keep the first row per sample_id (input order preserved); returns (frame, dropped)."""
    if "sample_id" not in df.columns:
        raise ValueError(f"dedup needs a sample_id column, got {df.columns}")
    kept = df.unique(subset="sample_id", keep="first", maintain_order=True)
    return kept, df.height - kept.height
