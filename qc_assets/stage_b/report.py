"""Human-facing summaries of a Stage-B run: the per-epoch table (markdown) and the accuracy plot."""

from __future__ import annotations

from pathlib import Path

from qc_assets.markdown import md_table
from qc_assets.plots import new_axes, png_bytes
from resources.store import atomic_write_bytes

COLUMNS = [
    ("epoch", "epoch", "{}"),
    ("version_start", "v start", "{}"),
    ("version_end", "v end", "{}"),
    ("train_accuracy", "train acc", "{:.3f}"),
    ("selection_accuracy", "selection acc", "{:.3f}"),
    ("train_format_ok_rate", "train format ok", "{:.3f}"),
    ("selection_format_ok_rate", "selection format ok", "{:.3f}"),
    ("end_train_accuracy", "end train acc", "{:.3f}"),
    ("end_selection_accuracy", "end selection acc", "{:.3f}"),
    ("accepted", "accepted", "{}"),
    ("rejected", "rejected", "{}"),
    ("vetoed", "vetoed", "{}"),
    ("invalid_json", "invalid json", "{}"),
    ("llm_calls", "LLM calls", "{}"),
    ("completion_tokens", "completion tokens", "{}"),
]


def epoch_table(rows: list[dict]) -> str:
    return md_table(
        [title for _, title, _ in COLUMNS],
        [[fmt.format(r[key]) if r.get(key) is not None else None for key, _, fmt in COLUMNS] for r in rows],
    )


def plot_epochs(rows: list[dict], path: Path, title: str) -> Path:
    """Accuracy and format-ok rate per epoch (at the epoch's start, plus the end of the last epoch)."""
    xs = [r["epoch"] - 1 for r in rows] + [rows[-1]["epoch"]] if rows else []
    fig, ax = new_axes()
    for key, label in (
        ("train_accuracy", "train accuracy"),
        ("selection_accuracy", "selection accuracy"),
        ("train_format_ok_rate", "format ok (train)"),
    ):
        ys = [r[key] for r in rows] + [rows[-1][f"end_{key}"]] if rows else []
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("epochs completed")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_write_bytes(path, png_bytes(fig))
