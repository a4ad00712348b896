"""Markdown tables for asset metadata, one way everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_cell(value, width: int | None = None) -> str:
    """One table cell: None is blank; pipes and newlines would break the row, so they are escaped;
    then cut to `width` characters when given."""
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text if width is None else text[:width]


def md_table(
    header: Sequence[str], rows: Iterable[Sequence], cell_width: int | None = None, max_chars: int | None = None
) -> str:
    """A markdown table. `cell_width` cuts each cell; `max_chars` keeps only the whole rows that fit
    (a preview), and the header alone is cut to it if even that is longer."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        line = "| " + " | ".join(md_cell(c, cell_width) for c in row) + " |"
        if max_chars is not None and sum(len(x) + 1 for x in lines) + len(line) > max_chars:
            break
        lines.append(line)
    text = "\n".join(lines)
    return text if max_chars is None else text[:max_chars]
