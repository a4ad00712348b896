"""Synthetic Text2SQL data, loaders, canonical ids, polars dedup, SQL cleaning and rule filter."""

import hashlib
import json
import sqlite3

import polars as pl
import pytest

from qc_assets.fastdistill.canonical import (
    canonical_dedup_frame,
    canonical_input,
    canonicalize_frame,
    decode_profile,
    dedup_frame,
    sample_id,
    schema_hash,
    with_ids,
)
from qc_assets.fastdistill.cleaning import clean_sql, rule_reject_reason, split_rationale
from qc_assets.fastdistill.loaders import load_records_jsonl, load_spider, load_wikisql, sqlite_schema
from qc_assets.fastdistill.sql_eval import run_sql
from qc_assets.fastdistill.text2sql_data import synthetic_dataset


def file_digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.db"))}


def test_synthetic_dataset_is_deterministic_bilingual_and_gold_runs(tmp_path):
    a = synthetic_dataset(tmp_path / "a", seed=3)
    b = synthetic_dataset(tmp_path / "b", seed=3)
    c = synthetic_dataset(tmp_path / "c", seed=4)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "db_path"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    assert file_digests(tmp_path / "a" / "db") == file_digests(tmp_path / "b" / "db")
    assert {r["lang"] for r in a} == {"en", "zh"}
    assert {r["split"] for r in a} == {"train", "dev"}
    assert len({r["db_id"] for r in a}) == 4
    assert any("JOIN" in r["gold_sql"] for r in a)
    for group in {r["group_id"] for r in a}:
        assert len({r["split"] for r in a if r["group_id"] == group}) == 1
    for r in a:
        result = run_sql(r["db_path"], r["gold_sql"], timeout_s=1.0)
        assert result.ok and result.rows, (r["gold_sql"], result.error)


def test_wikisql_loader(tmp_path):
    db = tmp_path / "dev.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE table_1_10015132_11 (col0 TEXT, col1 REAL)")
    conn.executemany("INSERT INTO table_1_10015132_11 VALUES (?, ?)", [("Lyon", 5.0), ("O'Hare", 7.0)])
    conn.commit()
    conn.close()
    (tmp_path / "dev.tables.jsonl").write_text(
        json.dumps({"id": "1-10015132-11", "header": ["City", "Score"], "types": ["text", "real"], "rows": []}) + "\n"
    )
    q = {
        "table_id": "1-10015132-11",
        "question": "What is the score of O'Hare?",
        "sql": {"sel": 1, "agg": 0, "conds": [[0, 0, "O'Hare"]]},
    }
    q2 = {"table_id": "1-10015132-11", "question": "最高分是多少？", "sql": {"sel": 1, "agg": 1, "conds": []}}
    (tmp_path / "dev.jsonl").write_text(json.dumps(q) + "\n" + json.dumps(q2, ensure_ascii=False) + "\n")
    recs = load_wikisql(tmp_path / "dev.jsonl", tmp_path / "dev.tables.jsonl", db, "dev")
    assert recs[0]["gold_sql"] == "SELECT col1 FROM table_1_10015132_11 WHERE col0 = 'O''Hare'"
    assert recs[1]["gold_sql"] == "SELECT MAX(col1) FROM table_1_10015132_11" and recs[1]["lang"] == "zh"
    assert "col0 TEXT -- City" in recs[0]["schema"]
    assert run_sql(db, recs[0]["gold_sql"], 1.0).rows == [(7.0,)]


def test_spider_loader_and_records_loader(tmp_path):
    db_dir = tmp_path / "database" / "zoo"
    db_dir.mkdir(parents=True)
    conn = sqlite3.connect(db_dir / "zoo.sqlite")
    conn.execute("CREATE TABLE animal (id INTEGER, name TEXT)")
    conn.commit()
    conn.close()
    (tmp_path / "dev.json").write_text(
        json.dumps([{"db_id": "zoo", "question": "How many animals?", "query": "SELECT count(*) FROM animal"}])
    )
    recs = load_spider(tmp_path / "dev.json", tmp_path / "database", "dev")
    assert recs[0]["schema"] == sqlite_schema(db_dir / "zoo.sqlite") and "CREATE TABLE animal" in recs[0]["schema"]
    assert run_sql(recs[0]["db_path"], recs[0]["gold_sql"], 1.0).rows == [(0,)]
    (tmp_path / "recs.jsonl").write_text(
        json.dumps({"question": "q", "gold_sql": "SELECT 1", "db_path": "database/zoo/zoo.sqlite", "schema": "s"})
        + "\n"
    )
    assert load_records_jsonl(tmp_path / "recs.jsonl")[0]["db_path"] == str(db_dir / "zoo.sqlite")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="lacks"):
        load_records_jsonl(tmp_path / "bad.jsonl")


def test_canonical_ids_follow_the_contract():
    rec = {"task_id": "text2sql", "db_id": "shop", "question": " Cafe\u0301 价格？ ", "schema": "CREATE TABLE t (a)"}
    assert canonical_input(rec) == '{"db_id":"shop","question":"Café 价格？"}'
    profile = decode_profile({"temperature": 0.7, "n": 2})
    assert profile == '{"n":2,"temperature":0.7}'
    expected = hashlib.sha256(
        f"text2sql|{schema_hash(rec['schema'])}|{canonical_input(rec)}|{profile}".encode()
    ).hexdigest()
    assert with_ids(rec, profile)["sample_id"] == expected
    assert sample_id("text2sql", schema_hash("x"), canonical_input(rec), profile) != expected
    assert with_ids(rec, decode_profile({"temperature": 0.0, "n": 2}))["sample_id"] != expected
    # key order and unicode composition do not change identity
    swapped = {"question": "Café 价格？", "schema": "CREATE TABLE t (a)", "db_id": "shop", "task_id": "text2sql"}
    assert with_ids(swapped, profile)["sample_id"] == expected
    with pytest.raises(ValueError, match="lacks key fields"):
        canonical_input({"db_id": "x"})


def test_polars_canonicalize_matches_python_and_dedups():
    questions = ['Price of "X"?', "Café\u0301", "Cafe\u0301\u0301", "杭州\n人口", " tab\t", "a\\b", "ctl\x01", "x"]
    rows = [
        {"task_id": "text2sql", "db_id": f"db{i % 2}", "question": q, "schema": f"S{i % 3}"}
        for i, q in enumerate(questions)
    ]
    rows += [dict(rows[0]), {**rows[1], "question": " " + rows[1]["question"] + " "}]
    profile = decode_profile({"temperature": 0.0, "n": 1})
    frame = canonicalize_frame(pl.DataFrame(rows), profile)
    python = [with_ids(r, profile) for r in rows]
    assert frame["canonical_input"].to_list() == [r["canonical_input"] for r in python]
    assert frame["sample_id"].to_list() == [r["sample_id"] for r in python]
    kept, dropped = dedup_frame(frame)
    assert dropped == 2 and kept.height == len(questions)
    assert kept["question"].to_list() == questions  # first occurrence kept, order preserved
    fused, fused_dropped = canonical_dedup_frame(pl.DataFrame(rows), profile)
    assert fused_dropped == 2 and fused["sample_id"].to_list() == kept["sample_id"].to_list()
    with pytest.raises(ValueError, match="must be String"):
        canonicalize_frame(pl.DataFrame({"task_id": ["t"], "db_id": [1], "question": ["q"], "schema": ["s"]}), profile)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("```sql\nSELECT a FROM t;\n```\nThis query returns a.", "SELECT a FROM t"),
        ("SQL: SELECT name FROM cities WHERE id = 1\n\nThis returns the name.", "SELECT name FROM cities WHERE id = 1"),
        ("Sure! Here is the query: SELECT * FROM t; Hope it helps", "SELECT * FROM t"),
        ("答案：SELECT COUNT(*) FROM t", "SELECT COUNT(*) FROM t"),
        ("SELECT a\nFROM t\nWHERE b = 'x;y'\nThis query selects a.", "SELECT a\nFROM t\nWHERE b = 'x;y'"),
        ("### RATIONALE\nCount rows.\n### ANSWER\nSELECT COUNT(*) FROM t", "SELECT COUNT(*) FROM t"),
        ("SELECT 1; DROP TABLE t", "SELECT 1; DROP TABLE t"),
        ("I do not know.", "I do not know."),
        ("", ""),
        (None, ""),
    ],
)
def test_clean_sql(raw, cleaned):
    assert clean_sql(raw) == cleaned


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("I do not know.", "not_select"),
        ("DELETE FROM t", "not_select"),
        ("SELECT 1; DROP TABLE t", "multiple_statements"),
        ("SELECT " + "a, " * 1200 + "b FROM t", "too_long"),
        ("SELECT 1 -- ok; not a statement", None),
        ("WITH x AS (SELECT 1) SELECT * FROM x", None),
        ("select name from t where a = ';'", None),
    ],
)
def test_rule_filter(sql, reason):
    assert rule_reject_reason(sql, max_chars=2000) == reason


def test_split_rationale():
    text = "### RATIONALE\nUse cities.\n### ANSWER\nSELECT name FROM cities"
    assert split_rationale(text) == ("Use cities.", "SELECT name FROM cities")
    assert split_rationale("SELECT 1") == (None, "SELECT 1")
    assert split_rationale(None) == (None, None)


def test_stage_inputs_on_a_records_file_splits_and_dedups(tmp_path):
    from qc_assets.fastdistill.config import FastDistillSettings
    from qc_assets.fastdistill.pipeline import read_rows, stage_inputs

    recs = synthetic_dataset(tmp_path / "src", seed=0, per_template=1)
    lines = [json.dumps({k: v for k, v in r.items() if k != "split"}, ensure_ascii=False) for r in recs]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines + lines[:3]) + "\n")  # three exact duplicates
    out = stage_inputs(tmp_path / "run", "w", FastDistillSettings(source="records", data_path=str(path)))
    assert out["loaded"] == len(recs) + 3 and out["duplicates_dropped"] == 3
    rows = read_rows(tmp_path / "run" / "dedup" / "records.parquet")
    assert len(rows) == len(recs) and len({r["sample_id"] for r in rows}) == len(recs)
    assert {r["split"] for r in rows} == {"train", "dev"}
    manifest = json.loads((tmp_path / "run" / "dedup" / "manifest.json").read_text())
    assert manifest["count"] == len(recs)
    assert manifest["min_sample_id"] == min(r["sample_id"] for r in rows)
