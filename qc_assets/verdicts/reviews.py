"""The review loop: a judged group that a reviewer files under a label folder becomes a review.

A judged group that left the inbox is looked up under `审核通过` / `审核不通过` by its group id; it
counts as reviewed when that folder holds every photo that was judged (same sha256), so an older
group that merely shares the id is not mistaken for it. Each review is appended once to
`reviews.jsonl` with the time it was first seen; agreement with reviewers over time is computed
from that log. The filed group is ordinary labelled data from then on: Stage-A picks it up.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from qc_assets.stage_a.discovery import (
    DEFAULT_GROUP_ID_PATTERN,
    INBOX_FOLDER,
    LABEL_FOLDERS,
    compile_group_id_pattern,
    group_id_of,
)
from qc_assets.verdicts.judge import images_digest
from resources.store import append_jsonl, read_jsonl


def inbox_group_ids(images_root: str | Path, mission: str, pattern: str = DEFAULT_GROUP_ID_PATTERN) -> list[str]:
    """Group ids waiting in the inbox right now (one `scandir`, no file is read); folders whose names
    share a ticket id (`pattern`, as Stage-A extracted it) are one group."""
    inbox = Path(images_root) / mission / INBOX_FOLDER
    if not inbox.is_dir():
        return []
    compiled = compile_group_id_pattern(pattern)
    with os.scandir(inbox) as entries:
        return sorted({group_id_of(e.name, compiled) for e in entries if e.is_dir(follow_symlinks=False)})


def _file_hashes(group_dir: Path) -> set[str]:
    # photos in sub-folders belong to the group too (Stage-A's nested="include")
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in group_dir.rglob("*") if p.is_file()}


def find_reviewer_label(mission_dir: Path, row: dict, pattern: str = DEFAULT_GROUP_ID_PATTERN) -> str | None:
    """The label folder that now holds this judged group's photos (in the folders of its id), or None."""
    judged = set(row["image_sha256s"])
    if not judged:
        return None
    compiled = compile_group_id_pattern(pattern)
    for folder, label in LABEL_FOLDERS.items():
        label_dir = mission_dir / folder
        if not label_dir.is_dir():
            continue
        hashes: set[str] = set()
        for group_dir in label_dir.iterdir():
            if group_dir.is_dir() and group_id_of(group_dir.name, compiled) == row["group_id"]:
                hashes |= _file_hashes(group_dir)
        if judged <= hashes:
            return label
    return None


def review_key(row: dict) -> str:
    return f"{row['record_id']}:{images_digest(row['image_sha256s'])}"


def close_reviews(
    left_inbox: list[dict], mission_dir: Path, reviews_path: Path, pattern: str = DEFAULT_GROUP_ID_PATTERN
) -> tuple[list[dict], int]:
    """Rows that left the inbox -> (the rows as `reviewed` or `withdrawn`, reviews appended now).

    Idempotent: a review already in the log keeps its first-seen time and is not appended again.
    """
    logged = {r["key"]: r for r in read_jsonl(reviews_path)}
    out, new = [], []
    for row in left_inbox:
        label = find_reviewer_label(mission_dir, row, pattern)
        if label is None:
            out.append({**row, "status": "withdrawn"})
            continue
        key = review_key(row)
        if key not in logged:
            logged[key] = {
                "key": key,
                "record_id": row["record_id"],
                "group_id": row["group_id"],
                "mission": row["mission"],
                "verdict": row["verdict"],
                "reason": row["reason"],
                "reviewer_label": label,
                "agrees": row["verdict"] == label,
                "needs_review": row["needs_review"],
                "guidance_version": row["guidance_version"],
                "model_fingerprint": row["model_fingerprint"],
                "judged_at": row["judged_at"],
                "first_seen_at": time.time(),
            }
            new.append(logged[key])
        review = logged[key]
        out.append(
            {
                **row,
                "status": "reviewed",
                "reviewer_label": label,
                "agrees_with_reviewer": review["agrees"],
                "reviewed_at": review["first_seen_at"],
            }
        )
    append_jsonl(reviews_path, new)
    return out, len(new)


def agreement_by_day(reviews: list[dict]) -> list[dict]:
    """Per UTC day the reviews were first seen: count, agreeing, rate, and the running (cumulative) rate."""
    days: dict[str, list[bool]] = defaultdict(list)
    for r in reviews:
        day = datetime.fromtimestamp(r["first_seen_at"], tz=UTC).date().isoformat()
        days[day].append(bool(r["agrees"]))
    out, seen, agreed = [], 0, 0
    for day in sorted(days):
        votes = days[day]
        seen, agreed = seen + len(votes), agreed + sum(votes)
        out.append(
            {
                "day": day,
                "reviews": len(votes),
                "agreed": sum(votes),
                "agreement": round(sum(votes) / len(votes), 4),
                "cumulative_agreement": round(agreed / seen, 4),
            }
        )
    return out


def plot_agreement(per_day: list[dict], title: str) -> bytes:
    from qc_assets.plots import new_axes, png_bytes

    fig, ax = new_axes()
    days = [d["day"] for d in per_day]
    ax.plot(days, [d["agreement"] for d in per_day], marker="o", label="that day")
    ax.plot(days, [d["cumulative_agreement"] for d in per_day], marker=".", linestyle="--", label="cumulative")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("machine agrees with reviewer")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.autofmt_xdate()
    return png_bytes(fig)
