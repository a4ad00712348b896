"""Where artifacts live and how they are written.

Every whole-file write goes to a temp file in the same folder and is renamed into place, so a
reader (or a crash) never sees half a file. Append-only JSONL logs are flushed and fsynced per
batch and read back tolerantly: a torn last line from a `kill -9` is ignored, not fatal.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

from resources.env import env

DEFAULT_DATA_ROOT = "data"


def data_root() -> Path:
    """The root under which every asset writes `<asset>/<partition>/...`."""
    return Path(env("QC_DATA_ROOT", DEFAULT_DATA_ROOT)).resolve()


def inputs_hash(payload: Any) -> str:
    """A short, stable key for JSON-able inputs: equal inputs, equal key (reuse a finished run)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def asset_dir(root: Path, asset: str, partition: str) -> Path:
    path = root / asset / partition
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return atomic_write_text(path, text)


def atomic_write_parquet(path: Path, frame: pl.DataFrame) -> Path:
    """A polars frame as one parquet file, written whole or not at all."""
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Append rows durably; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    if not lines:
        return 0
    _drop_torn_tail(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(lines))
        handle.flush()
        os.fsync(handle.fileno())
    return len(lines)


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Yield complete rows; a final line without its newline (a write cut by a crash) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            if line.strip():
                yield json.loads(line)


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a crash so the next append starts on a clean line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        data = handle.seek(0) or handle.read()
        handle.truncate(data.rfind(b"\n") + 1)
