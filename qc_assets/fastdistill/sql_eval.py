"""Sandboxed SQLite execution for Text2SQL evaluation.

The earlier system executed candidate SQL read-write with no timeout and counted an empty string
as executed. Here every query runs on a connection that is:

- opened read-only (`file:...?mode=ro`) with `PRAGMA query_only=ON`,
- guarded by an authorizer that allows only reads (SELECT, READ, FUNCTION, RECURSIVE) and denies
  writes, ATTACH/DETACH, PRAGMA, DDL, transactions and `load_extension`,
- limited to one statement, a wall-clock deadline (progress handler) and a row cap,
- limited in string/blob length so `zeroblob(1e9)` cannot exhaust memory.

`run_sql(db_path, sql, timeout_s) -> SqlResult` is the stable entry point. `SqlEvaluator` keeps
one persistent connection per database for throughput (one evaluator per worker process/thread).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_ROWS = 10_000
MAX_SQL_CHARS = 20_000
MAX_VALUE_BYTES = 1_000_000
# The progress handler runs every N virtual-machine instructions; small enough for a ~ms deadline check.
PROGRESS_STEPS = 2_000

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


@dataclass(frozen=True)
class SqlResult:
    """Outcome of one query. `ok` is False for every failure, `error` then says why and
    `error_class` names the failure family (see `classify_error`)."""

    ok: bool
    rows: list[tuple] = field(default_factory=list)
    error: str | None = None
    error_class: str | None = None
    columns: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def _authorizer(action: int, arg1, arg2, _db, _trigger) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """A connection that cannot change the database file or attach others."""
    path = Path(db_path)
    if not path.is_file():
        raise ValueError(f"db_path {str(path)!r} is not an existing SQLite file")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA query_only=ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_CHARS)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorizer)
    return conn


def classify_error(message: str) -> str:
    """Map an SQLite/driver message to a small, stable set of error classes for reports."""
    text = message.lower()
    if "interrupted" in text or "timeout" in text:
        return "timeout"
    if "not authorized" in text or "authorization denied" in text or "readonly" in text or "read-only" in text:
        return "denied"
    if "one statement at a time" in text:
        return "multiple_statements"
    if "no such table" in text:
        return "no_such_table"
    if "no such column" in text:
        return "no_such_column"
    if "no such function" in text:
        return "no_such_function"
    if "syntax error" in text or "incomplete input" in text or "unrecognized token" in text:
        return "syntax_error"
    if "ambiguous column" in text:
        return "ambiguous_column"
    if "too big" in text or "too long" in text:
        return "too_large"
    return "other"


def _failure(error: str, error_class: str, started: float) -> SqlResult:
    return SqlResult(ok=False, error=error, error_class=error_class, elapsed_s=time.perf_counter() - started)


def execute_on(conn: sqlite3.Connection, sql: str, timeout_s: float, max_rows: int) -> SqlResult:
    """Run one query on a sandboxed connection (from `open_readonly`)."""
    started = time.perf_counter()
    if not isinstance(sql, str) or not sql.strip():
        return _failure("empty SQL", "empty", started)
    if len(sql) > MAX_SQL_CHARS:
        return _failure(f"SQL has {len(sql)} characters, limit {MAX_SQL_CHARS}", "too_large", started)
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    deadline = started + timeout_s
    conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, PROGRESS_STEPS)
    try:
        cursor = conn.execute(sql)
        if cursor.description is None:
            # only comments, bare semicolons or a statement that returns nothing: no query ran, so
            # it must not count as executed (nor match a gold query with an empty result)
            cursor.close()
            return _failure("no query: the SQL returns no result columns", "empty", started)
        rows = cursor.fetchmany(max_rows + 1)
        columns = [d[0] for d in cursor.description]
        cursor.close()
    except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as err:
        # sqlite3.Warning is what Python raises for "You can only execute one statement at a time."
        message = f"{type(err).__name__}: {err}"
        error_class = "timeout" if time.perf_counter() > deadline else classify_error(message)
        return _failure(message, error_class, started)
    finally:
        conn.set_progress_handler(None, 0)
        if conn.in_transaction:
            conn.rollback()
    if len(rows) > max_rows:
        return _failure(f"row cap exceeded: more than {max_rows} rows", "row_cap", started)
    return SqlResult(ok=True, rows=rows, columns=columns, elapsed_s=time.perf_counter() - started)


def run_sql(
    db_path: str | Path, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS
) -> SqlResult:
    """Run one read-only query with a wall-clock limit and a row cap; empty SQL fails."""
    conn = open_readonly(db_path)
    try:
        return execute_on(conn, sql, timeout_s, max_rows)
    finally:
        conn.close()


class SqlEvaluator:
    """Persistent sandboxed connections, one per database; use one instance per worker."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self._conns: dict[str, sqlite3.Connection] = {}
        self._gold: dict[tuple[str, str], str] = {}

    def run(self, db_path: str | Path, sql: str) -> SqlResult:
        key = str(db_path)  # no Path.resolve() per query: it costs more than the query itself
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = open_readonly(key)
        return execute_on(conn, sql, self.timeout_s, self.max_rows)

    def gold_signature(self, db_path: str | Path, gold_sql: str) -> str:
        """Signature of the gold result, computed once per (db, gold SQL)."""
        key = (str(db_path), gold_sql)
        if key not in self._gold:
            gold = self.run(db_path, gold_sql)
            if not gold.ok:
                raise ValueError(f"gold SQL fails on {db_path}: {gold.error} ({gold_sql!r})")
            self._gold[key] = result_signature(gold.rows, query_orders(gold_sql))
        return self._gold[key]

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> SqlEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- result signatures / gold match

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


def query_orders(sql: str) -> bool:
    """True when the outermost query has ORDER BY (then row order is part of the answer)."""
    stripped = _STRING_LITERAL.sub("''", sql)
    depth, outer = 0, []
    for ch in stripped:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            outer.append(ch)
    return bool(_ORDER_BY.search("".join(outer)))


def _normalise_value(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return round(value, 6)
    if isinstance(value, bytes):
        return value.hex()
    return value


def result_signature(rows: list[tuple], ordered: bool) -> str:
    """sha256 over normalised rows; order-insensitive (multiset) unless `ordered`."""
    normalised = [json.dumps([_normalise_value(v) for v in row], ensure_ascii=False) for row in rows]
    if not ordered:
        normalised.sort()
    return hashlib.sha256("\n".join(normalised).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ExecEval:
    exec_pass: bool
    exec_error: str | None
    exec_error_class: str | None
    gold_match: bool
    result_signature: str | None
    gold_signature: str | None
    elapsed_s: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def exec_eval(evaluator: SqlEvaluator, db_path: str | Path, sql: str, gold_sql: str | None) -> ExecEval:
    """Execute `sql` and, when gold is given, compare result signatures (ordered iff gold orders)."""
    result = evaluator.run(db_path, sql)
    gold_sig = evaluator.gold_signature(db_path, gold_sql) if gold_sql else None
    ordered = bool(gold_sql) and query_orders(gold_sql)
    sig = result_signature(result.rows, ordered) if result.ok else None
    return ExecEval(
        exec_pass=result.ok,
        exec_error=result.error,
        exec_error_class=result.error_class,
        gold_match=bool(result.ok and gold_sig is not None and sig == gold_sig),
        result_signature=sig,
        gold_signature=gold_sig,
        elapsed_s=result.elapsed_s,
    )
