"""What changed under the images root since last time: plain code behind the Dagster sensor."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qc_assets.missions import validate_mission_name


def mission_signatures(images_root: str | Path) -> dict[str, str]:
    """Mission folder name -> hash of every file's relative path, size and mtime beneath it.

    A new group folder, a new photo, or a replaced photo changes the mission's signature.
    """
    root = Path(images_root)
    if not root.is_dir():
        return {}
    signatures = {}
    for mission_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        digest = hashlib.sha256()
        for path in sorted(mission_dir.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(mission_dir).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        signatures[mission_dir.name] = digest.hexdigest()[:16]
    return signatures


def changed_missions(previous: dict[str, str], current: dict[str, str]) -> list[str]:
    return [name for name, sig in current.items() if previous.get(name) != sig]


def unsafe_reason(name: str) -> str | None:
    try:
        validate_mission_name(name)
    except ValueError as e:
        return str(e)
    return None
