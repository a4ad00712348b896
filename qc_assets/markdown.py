"""Markdown tables for asset metadata, one way everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_cell(value) -> str:
    """One table cell: None is blank; pipes and newlines would break the row, so they are escaped."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
