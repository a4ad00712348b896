"""Stage-A plots a person reads at a glance: answer lengths, photos per shard."""

from __future__ import annotations

from qc_assets.plots import new_axes, png_bytes


def plot_answer_lengths(completion_tokens: list[int], max_new_tokens: int, title: str) -> bytes:
    """Histogram of answer lengths in tokens, with the cap drawn: a pile-up at the line is truncation."""
    fig, ax = new_axes()
    bins = min(40, max(5, len(set(completion_tokens))))
    ax.hist(
        completion_tokens, bins=bins, range=(0, max(max_new_tokens, max(completion_tokens, default=1))), color="#4477aa"
    )
    ax.axvline(max_new_tokens, color="#cc3311", linestyle="--", label=f"max_new_tokens = {max_new_tokens}")
    ax.set_xlabel("answer length (completion tokens)")
    ax.set_ylabel("photos")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return png_bytes(fig)


def plot_photos_per_shard(shards: list[dict], title: str) -> bytes:
    """Photos per shard (summarised now on top of reused): a lopsided hash shows as one tall bar."""
    fig, ax = new_axes()
    names = [str(m["shard"]) for m in shards]
    now = [m["summarised_now"] for m in shards]
    reused = [m["reused"] for m in shards]
    ax.bar(names, reused, color="#bbbbbb", label="already summarised")
    ax.bar(names, now, bottom=reused, color="#4477aa", label="summarised this run")
    ax.set_xlabel("shard")
    ax.set_ylabel("photos")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return png_bytes(fig)
