"""What changed under the images root since last time: plain code behind the Dagster sensor.

A tick must cost what changed, not what exists (hashing every photo's path, size and mtime took 6 s
on 100,000 files). A tick never reads or stats a photo; it relies on directory mtimes:

- a new, renamed or removed group changes its label folder's mtime (and a new label folder, inbox or
  stray file changes the mission folder's mtime): every tick stats these few folders, and rescans
  the group folders of a folder whose mtime moved, so new submissions and a reviewer's moves are
  seen on the next tick at a cost proportional to that folder;
- a photo created, renamed or deleted inside an existing group changes only that group folder's
  mtime: each tick also re-stats the group folders of a few more folders, in rotation, up to
  `sweep_budget` group folders per tick, so such an edit is seen within one full rotation (a tick at
  every size; groups / budget ticks at most).

State per folder: [mtime, group folders, sum of their mtimes]; the cursor stays a few hundred bytes
per mission however many photos there are. Not seen at all: a photo rewritten in place under the
same name (its folder's mtime stays); uploads and atomic writes (temp file + rename) are seen.
`benchmarks/sensor_tick.py` measures the tick at 10^5 and 10^6 photos.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from qc_assets.missions import validate_mission_name
from qc_assets.stage_a.discovery import INBOX_FOLDER
from resources.env import env_number

PARTS = ("labelled", "inbox")
DEFAULT_SWEEP_BUDGET = 20_000
MISSION_DIR_KEY = "."  # the mission folder's own entry in its state


def sweep_budget_from_env() -> int:
    """Group folders re-stated per tick beyond the changed folders; QC_SENSOR_SWEEP_GROUPS overrides."""
    value = env_number("QC_SENSOR_SWEEP_GROUPS", DEFAULT_SWEEP_BUDGET, int)
    if value < 1:
        raise ValueError(f"QC_SENSOR_SWEEP_GROUPS must be >= 1, got {value}")
    return value


def mission_folders(images_root: str | Path) -> list[str]:
    """Names of the folders directly under the images root (one `scandir`)."""
    root = Path(images_root)
    if not root.is_dir():
        return []
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def part_of(key: str) -> str:
    return "inbox" if key == INBOX_FOLDER else "labelled"


def _groups(folder: str, mtime: int) -> list[int]:
    """[folder mtime, group folders, sum of their mtimes]: one stat per group folder, none per photo."""
    count = total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            total += entry.stat(follow_symlinks=False).st_mtime_ns
            count += 1
    return [mtime, count, total]


def scan(
    images_root: str | Path, previous: dict, sweep_after: str, sweep_budget: int
) -> tuple[dict[str, dict[str, list[int]]], str, int]:
    """(state per mission per folder, the last folder swept, group folders stat-ed this tick)."""
    root = Path(images_root)
    state: dict[str, dict[str, list[int]]] = {}
    carried: list[tuple[str, str, str]] = []  # folders whose mtime did not move: sweep candidates
    stats = 0
    for mission in mission_folders(root):
        before = previous.get(mission) if isinstance(previous.get(mission), dict) else {}
        folders = {MISSION_DIR_KEY: [os.stat(root / mission).st_mtime_ns, 0, 0]}
        with os.scandir(root / mission) as entries:
            for entry in entries:
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                prior = before.get(entry.name)
                if not entry.is_dir(follow_symlinks=False):
                    folders[entry.name] = [mtime, 0, 0]
                elif isinstance(prior, list) and len(prior) == 3 and prior[0] == mtime:
                    folders[entry.name] = list(prior)
                    carried.append((f"{mission}/{entry.name}", mission, entry.path))
                else:
                    folders[entry.name] = _groups(entry.path, mtime)
                    stats += folders[entry.name][1]
        state[mission] = folders
    carried.sort()
    start = next((i for i, (key, _, _) in enumerate(carried) if key > sweep_after), 0)
    last = sweep_after
    for n, (key, mission, path) in enumerate(carried[start:] + carried[:start]):
        name = key[len(mission) + 1 :]
        # the folder's last known size predicts its cost; at least one folder per tick, so the rotation moves
        if n and stats + state[mission][name][1] > sweep_budget:
            break
        state[mission][name] = _groups(path, state[mission][name][0])
        stats += state[mission][name][1]
        last = key
    return state, last, stats


def changed_parts(before: dict, after: dict[str, list[int]]) -> list[str]:
    """Which of "labelled" / "inbox" changed between two states of one mission."""
    before = before if isinstance(before, dict) else {}
    keys = set(before) | set(after)
    return [p for p in PARTS if any(part_of(k) == p and before.get(k) != after.get(k) for k in keys)]


def part_digest(folders: dict[str, list[int]], part: str) -> str:
    """A short id of one part's state, for run keys (the same state never requests a second run)."""
    items = sorted((k, v) for k, v in folders.items() if part_of(k) == part)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def unsafe_reason(name: str) -> str | None:
    try:
        validate_mission_name(name)
    except ValueError as e:
        return str(e)
    return None
