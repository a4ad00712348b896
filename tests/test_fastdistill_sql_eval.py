"""The SQL sandbox: read-only, one statement, deadline, row cap, empty SQL fails, db untouched."""

import hashlib
import sqlite3

import pytest

from qc_assets.fastdistill.sql_eval import (
    SqlEvaluator,
    exec_eval,
    query_orders,
    result_signature,
    run_sql,
)


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT, population INTEGER);
        INSERT INTO city VALUES (1, 'Berlin', 3600000), (2, 'Lyon', 520000), (3, '杭州', 12000000);
        """
    )
    conn.commit()
    conn.close()
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_select_returns_rows(db):
    result = run_sql(db, "SELECT name FROM city WHERE population > 1000000 ORDER BY id", timeout_s=1.0)
    assert result.ok and result.error is None
    assert result.rows == [("Berlin",), ("杭州",)]
    assert result.columns == ["name"]


@pytest.mark.parametrize("sql", ["", "   ", "\n\t", None, "-- nothing", "/* c */", ";", " ; ; "])
def test_empty_sql_fails(db, sql):
    result = run_sql(db, sql, timeout_s=1.0)
    assert not result.ok
    assert result.error_class == "empty"
    assert result.rows == []


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO city VALUES (4, 'Oslo', 700000)",
        "UPDATE city SET population = 0",
        "DELETE FROM city",
        "DROP TABLE city",
        "CREATE TABLE x (a)",
        "CREATE TEMP TABLE x (a)",
        "CREATE TEMP VIEW v AS SELECT 1",
        "ALTER TABLE city ADD COLUMN c",
        "REPLACE INTO city VALUES (1, 'X', 1)",
        "VACUUM",
        "BEGIN IMMEDIATE",
    ],
)
def test_writes_are_denied_and_db_unchanged(db, sql):
    before = digest(db)
    result = run_sql(db, sql, timeout_s=1.0)
    assert not result.ok
    assert result.error_class == "denied", result.error
    assert digest(db) == before
    assert run_sql(db, "SELECT count(*) FROM city", 1.0).rows == [(3,)]


def test_attach_is_denied(db, tmp_path):
    other = tmp_path / "other.db"
    result = run_sql(db, f"ATTACH DATABASE '{other}' AS o", timeout_s=1.0)
    assert not result.ok and result.error_class == "denied"
    assert not other.exists()


@pytest.mark.parametrize(
    "sql", ["PRAGMA query_only=OFF", "PRAGMA journal_mode=WAL", "PRAGMA writable_schema=ON", "PRAGMA table_info(city)"]
)
def test_pragma_is_denied(db, sql):
    before = digest(db)
    result = run_sql(db, sql, timeout_s=1.0)
    assert not result.ok and result.error_class == "denied"
    assert digest(db) == before


def test_load_extension_function_is_denied(db):
    result = run_sql(db, "SELECT load_extension('libx')", timeout_s=1.0)
    assert not result.ok and result.error_class == "denied"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1; DELETE FROM city",
        "SELECT name FROM city; DROP TABLE city;",
    ],
)
def test_multiple_statements_fail(db, sql):
    before = digest(db)
    result = run_sql(db, sql, timeout_s=1.0)
    assert not result.ok
    assert result.error_class == "multiple_statements", result.error
    assert digest(db) == before


def test_trailing_semicolon_and_comment_are_one_statement(db):
    result = run_sql(db, "SELECT count(*) FROM city; -- done\n", timeout_s=1.0)
    assert result.ok and result.rows == [(3,)]


def test_runaway_recursive_cte_times_out(db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    result = run_sql(db, sql, timeout_s=0.2)
    assert not result.ok
    assert result.error_class == "timeout", result.error
    # the connection-level evaluator stays usable after an interrupt
    with SqlEvaluator(timeout_s=0.2) as ev:
        assert ev.run(db, sql).error_class == "timeout"
        assert ev.run(db, "SELECT count(*) FROM city").rows == [(3,)]


def test_bounded_recursive_cte_is_allowed(db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT sum(x) FROM c"
    assert run_sql(db, sql, timeout_s=1.0).rows == [(15,)]


def test_row_cap(db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    result = run_sql(db, sql, timeout_s=2.0, max_rows=50)
    assert not result.ok and result.error_class == "row_cap"
    ok = run_sql(db, "SELECT id FROM city", timeout_s=1.0, max_rows=3)
    assert ok.ok and len(ok.rows) == 3


def test_huge_blob_is_refused(db):
    result = run_sql(db, "SELECT zeroblob(1000000000)", timeout_s=1.0)
    assert not result.ok and result.error_class == "too_large", result.error


def test_syntax_and_missing_table_classes(db):
    assert run_sql(db, "SELEC name FROM city", 1.0).error_class == "syntax_error"
    assert run_sql(db, "SELECT name FROM town", 1.0).error_class == "no_such_table"
    assert run_sql(db, "SELECT mayor FROM city", 1.0).error_class == "no_such_column"


def test_missing_db_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not an existing SQLite file"):
        run_sql(tmp_path / "absent.db", "SELECT 1", 1.0)
    assert not (tmp_path / "absent.db").exists()


def test_database_file_is_byte_identical_after_a_session(db):
    before = digest(db)
    names_before = sorted(p.name for p in db.parent.iterdir())
    with SqlEvaluator(timeout_s=0.2, max_rows=10) as ev:
        for sql in [
            "SELECT * FROM city",
            "DELETE FROM city",
            "PRAGMA user_version=7",
            "SELECT 1; UPDATE city SET name='x'",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c",
            "",
        ]:
            ev.run(db, sql)
    assert digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == names_before


def test_query_orders_only_for_outer_order_by():
    assert query_orders("SELECT a FROM t ORDER BY a DESC")
    assert not query_orders("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 3)")
    assert not query_orders("SELECT a FROM t WHERE b = 'order by'")


def test_result_signature_ordered_vs_unordered():
    a, b = [(1, "x"), (2, "y")], [(2, "y"), (1, "x")]
    assert result_signature(a, ordered=False) == result_signature(b, ordered=False)
    assert result_signature(a, ordered=True) != result_signature(b, ordered=True)
    assert result_signature([(1.0,)], False) == result_signature([(1,)], False)
    assert result_signature([(1, "x")], False) != result_signature([(1, "x"), (1, "x")], False)


def test_gold_match_respects_order_of_gold(db):
    with SqlEvaluator(timeout_s=1.0) as ev:
        unordered_gold = "SELECT name FROM city WHERE population > 1000000"
        same_set = "SELECT name FROM city WHERE population > 1000000 ORDER BY name DESC"
        assert exec_eval(ev, db, same_set, unordered_gold).gold_match
        ordered_gold = "SELECT name FROM city ORDER BY population DESC"
        wrong_order = "SELECT name FROM city ORDER BY population ASC"
        right_order = "SELECT name FROM city ORDER BY population DESC LIMIT 10"
        assert not exec_eval(ev, db, wrong_order, ordered_gold).gold_match
        assert exec_eval(ev, db, right_order, ordered_gold).gold_match
        failed = exec_eval(ev, db, "", ordered_gold)
        assert not failed.exec_pass and not failed.gold_match and failed.exec_error_class == "empty"
        with pytest.raises(ValueError, match="gold SQL fails"):
            exec_eval(ev, db, "SELECT 1", "SELECT nope FROM city")
