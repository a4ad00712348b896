"""Metadata helpers for the FastDistill assets: short markdown previews and small plots."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from qc_assets.markdown import md_table
from qc_assets.plots import new_axes, png_bytes, png_markdown

PREVIEW_CHARS = 500


def md_preview(rows: Sequence[dict], columns: Sequence[str], limit: int = PREVIEW_CHARS) -> dg.MetadataValue:
    """A markdown table of the first rows, cut to at most `limit` characters."""
    return dg.MetadataValue.md(
        md_table(columns, ([row.get(c) for c in columns] for row in rows), cell_width=60, max_chars=limit)
    )


def plot_md(values: dict[str, float], title: str, line: bool = False) -> dg.MetadataValue:
    """A small PNG (bar or line chart) embedded in markdown; text when there is nothing to plot."""
    if not values:
        return dg.MetadataValue.md(f"*{title}: none*")
    fig, ax = new_axes(figsize=(5, 2.6), dpi=80)
    keys, vals = list(values), [float(v) for v in values.values()]
    if line:
        ax.plot(range(1, len(vals) + 1), vals, marker="o")
        ax.set_xlabel("step")
    else:
        ax.bar(keys, vals)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.set_title(title)
    return dg.MetadataValue.md(png_markdown(png_bytes(fig), title))
