"""Cheap text gates before any execution: SQL cleaning and a rule filter.

`clean_sql` pulls one SQL statement out of a model answer (code fences, "SQL:" / "答案：" prefixes,
a `### ANSWER` section, trailing prose). `rule_reject_reason` returns why a cleaned statement must
not be executed (empty, not a SELECT, too long, several statements), or None.
`split_rationale` separates `### RATIONALE` / `### ANSWER` sections (Distilling Step-by-Step).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_ANSWER_MARK = re.compile(r"^#+\s*ANSWER\s*:?\s*$|^#+\s*答案\s*[:：]?\s*$", re.IGNORECASE | re.MULTILINE)
_RATIONALE_MARK = re.compile(r"^#+\s*RATIONALE\s*:?\s*$|^#+\s*(?:解释|推理)\s*[:：]?\s*$", re.IGNORECASE | re.MULTILINE)
# WITH only as a CTE head ("with the highest price" is prose, not SQL).
_START = re.compile(r"\bSELECT\b|\bWITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\([^)]*\)\s*)?AS\s*\(", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:SQL|SQLite|Query|Answer|答案|查询)\s*[:：]\s*", re.IGNORECASE)
_PROSE_LINE = re.compile(
    r"^\s*(?:This|The|Here|Note|Explanation|It|That|These|Which|Where the|这|该|此|注意|解释|说明)\b", re.IGNORECASE
)
_LEADING = re.compile(r"^\s*(?:SELECT|WITH)\b", re.IGNORECASE)
# A second statement after `;` is kept (so the rule filter rejects it), prose after `;` is cut.
_STATEMENT_WORD = re.compile(
    r"^\s*(SELECT|WITH|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|PRAGMA|ATTACH|DETACH|REPLACE|VACUUM|BEGIN)\b",
    re.IGNORECASE,
)


def _statement_end(sql: str) -> int | None:
    """Index of the first `;` outside quotes and comments, or None."""
    quote = None
    i = 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif sql.startswith("--", i):
            nl = sql.find("\n", i)
            i = len(sql) if nl < 0 else nl
            continue
        elif ch == ";":
            return i
        i += 1
    return None


def clean_sql(text: str | None) -> str:
    """The first SQL statement in a model answer, without fences, prefixes, `;` or trailing prose.
    Returns "" when there is nothing (the rule filter then rejects it as empty)."""
    if not text:
        return ""
    body = text
    answer = _ANSWER_MARK.search(body)
    if answer:
        body = body[answer.end() :]
    fences = _FENCE.findall(body)
    if fences:
        sql_fences = [code for lang, code in fences if lang.lower() in ("sql", "sqlite")]
        body = (sql_fences or [fences[0][1]])[0]
    body = _PREFIX.sub("", body.strip())
    start = _START.search(body)
    if start is None:
        return body.strip()
    body = body[start.start() :]
    end = _statement_end(body)
    if end is not None:
        if _STATEMENT_WORD.match(body[end + 1 :]):
            return body.strip().rstrip(";").strip()
        return body[:end].strip()
    kept = []
    for line in body.split("\n"):
        if kept and (not line.strip() or _PROSE_LINE.match(line)):
            break
        kept.append(line)
    return "\n".join(kept).strip()


def rule_reject_reason(sql: str, max_chars: int = 2000) -> str | None:
    """Why `sql` (already cleaned) must not be executed, or None if it passes the cheap rules."""
    if not sql or not sql.strip():
        return "empty"
    if len(sql) > max_chars:
        return "too_long"
    if not _LEADING.match(sql):
        return "not_select"
    end = _statement_end(sql)
    if end is not None and re.sub(r"--[^\n]*", "", sql[end + 1 :]).strip():
        return "multiple_statements"
    return None


def split_rationale(text: str | None) -> tuple[str | None, str | None]:
    """(rationale, answer) from `### RATIONALE ... ### ANSWER ...`; (None, text) without markers."""
    if not text:
        return None, None
    answer = _ANSWER_MARK.search(text)
    if answer is None:
        return None, text.strip()
    head = text[: answer.start()]
    rationale_mark = _RATIONALE_MARK.search(head)
    rationale = head[rationale_mark.end() :] if rationale_mark else head
    return (rationale.strip() or None), text[answer.end() :].strip()
