"""Loaders for Text2SQL sets on disk: WikiSQL and Spider formats, and our own records JSONL.

Every loader returns records with the same fields as the synthetic generator: task_id,
example_id, lang, db_id, db_path, schema, question, gold_sql, split.
"""

from __future__ import annotations

import json
from pathlib import Path

from qc_assets.fastdistill.sql_eval import open_readonly
from qc_assets.fastdistill.text2sql_data import TASK_ID

WIKISQL_AGG = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"]
WIKISQL_OPS = ["=", ">", "<", "OP"]
REQUIRED = ("question", "gold_sql", "db_path", "schema")


def sqlite_schema(db_path: str | Path) -> str:
    """The CREATE statements of a database, read through the read-only sandbox connection."""
    conn = open_readonly(db_path)
    try:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL ORDER BY name")
        return "\n".join(r[0].strip() + ";" for r in rows)
    finally:
        conn.close()


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _lang(text: str) -> str:
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def wikisql_to_sql(sql: dict, table_name: str) -> str:
    """WikiSQL's logical form over the official `.db` files (columns named col0..colN)."""
    agg = WIKISQL_AGG[sql["agg"]]
    col = f"col{sql['sel']}"
    select = f"{agg}({col})" if agg else col
    where = []
    for col_index, op_index, value in sql.get("conds", []):
        literal = value if isinstance(value, int | float) else "'" + str(value).replace("'", "''") + "'"
        where.append(f"col{col_index} {WIKISQL_OPS[op_index]} {literal}")
    tail = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {select} FROM {table_name}{tail}"


def load_wikisql(questions_jsonl: Path, tables_jsonl: Path, db_path: Path, split: str) -> list[dict]:
    """WikiSQL `<split>.jsonl` + `<split>.tables.jsonl` + `<split>.db`; the schema lists the header
    next to each colN so a model can map words to columns."""
    tables = {t["id"]: t for t in _read_jsonl(Path(tables_jsonl))}
    records = []
    for i, row in enumerate(_read_jsonl(Path(questions_jsonl))):
        table = tables.get(row["table_id"])
        if table is None:
            raise ValueError(f"question {i} names table_id {row['table_id']!r}, absent from {tables_jsonl}")
        table_name = "table_" + row["table_id"].replace("-", "_")
        cols = ",\n".join(
            f"  col{j} {typ.upper()} -- {name}"
            for j, (name, typ) in enumerate(zip(table["header"], table["types"], strict=True))
        )
        records.append(
            {
                "task_id": TASK_ID,
                "example_id": f"wikisql-{split}-{i}",
                "lang": _lang(row["question"]),
                "db_id": table_name,
                "db_path": str(db_path),
                "schema": f"CREATE TABLE {table_name} (\n{cols}\n);",
                "question": row["question"],
                "gold_sql": wikisql_to_sql(row["sql"], table_name),
                "split": split,
            }
        )
    return records


def load_spider(questions_json: Path, database_dir: Path, split: str) -> list[dict]:
    """Spider `dev.json`/`train_spider.json` + `database/<db_id>/<db_id>.sqlite`."""
    with open(questions_json, encoding="utf-8") as handle:
        rows = json.load(handle)
    schemas: dict[str, str] = {}
    records = []
    for i, row in enumerate(rows):
        db_id = row["db_id"]
        db_path = Path(database_dir) / db_id / f"{db_id}.sqlite"
        if db_id not in schemas:
            schemas[db_id] = sqlite_schema(db_path)
        records.append(
            {
                "task_id": TASK_ID,
                "example_id": f"spider-{split}-{i}",
                "lang": _lang(row["question"]),
                "db_id": db_id,
                "db_path": str(db_path),
                "schema": schemas[db_id],
                "question": row["question"],
                "gold_sql": row["query"],
                "split": split,
            }
        )
    return records


def load_records_jsonl(path: Path, default_split: str = "train") -> list[dict]:
    """Our own format (one record per line, the fields above); relative db paths resolve next to the file."""
    records = []
    for i, row in enumerate(_read_jsonl(Path(path))):
        missing = [k for k in REQUIRED if not row.get(k)]
        if missing:
            raise ValueError(f"{path} line {i + 1} lacks {missing}; expected fields {list(REQUIRED)}")
        db_path = Path(row["db_path"])
        if not db_path.is_absolute():
            db_path = Path(path).parent / db_path
        records.append(
            {
                "task_id": row.get("task_id", TASK_ID),
                "example_id": row.get("example_id", f"rec-{i}"),
                "lang": row.get("lang", _lang(row["question"])),
                "db_id": row.get("db_id", db_path.stem),
                "db_path": str(db_path),
                "schema": row["schema"],
                "question": row["question"],
                "gold_sql": row["gold_sql"],
                "split": row.get("split", default_split),
            }
        )
    return records
