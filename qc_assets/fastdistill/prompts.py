"""Teacher prompts for Text2SQL; the student is trained and evaluated on the same prompt."""

from __future__ import annotations

import hashlib

# One worked example: small models follow a shown format far better than a described one.
_EXAMPLE = (
    "Example:\nSchema:\nCREATE TABLE staff (id INTEGER, name TEXT, age INTEGER);\n"
    "Question: How many staff are older than 30?\nSELECT COUNT(*) FROM staff WHERE age > 30"
)
SYSTEM_SQL = (
    "You are a Text2SQL assistant. Given an SQLite schema and a question (English or Chinese), "
    "answer with exactly one SQLite SELECT statement and nothing else.\n\n" + _EXAMPLE
)
SYSTEM_RATIONALE = (
    "You are a Text2SQL assistant. Given an SQLite schema and a question (English or Chinese), "
    "first explain in one or two short sentences which tables, columns and conditions are needed, "
    "then give exactly one SQLite SELECT statement. Use this format:\n"
    "### RATIONALE\n<short explanation>\n### ANSWER\n<SQL>"
)
RECIPES = ("sql", "rationale")


def build_messages(record: dict, recipe: str = "sql") -> list[dict[str, str]]:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    system = SYSTEM_SQL if recipe == "sql" else SYSTEM_RATIONALE
    user = f"Schema:\n{record['schema']}\n\nQuestion: {record['question']}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def prompt_hash(recipe: str = "sql") -> str:
    system = SYSTEM_SQL if recipe == "sql" else SYSTEM_RATIONALE
    return hashlib.sha256(system.encode("utf-8")).hexdigest()[:12]
