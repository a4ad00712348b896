"""Find a mission's groups on disk and account for every file that is not usable.

Layout: `<images_root>/<mission>/{审核通过|审核不通过}/<group_id>/*.{jpg,jpeg,png}`. The label comes
from the folder. Anything else found is listed in `skipped` with a reason; nothing is dropped
silently and nothing found here stops the run.

Unlabelled groups waiting for a verdict arrive under `<mission>/待审核/<group_id>/` (INBOX_FOLDER).
The labelled discovery lists that folder as skipped (it is never training data); `discover(...,
inbox=True)` walks only that folder and returns its groups with `label=None`.

Group ids: real shares suffix folder names (`QC-BBU-20250101-12_补拍`, `QC-BBU-20250101-12 (2)`), so
the id is the first capture group of `group_id_pattern` (the seed's ticket regex by default); a name
that does not match is its own id. Folders of one label folder that share an id are one group (their
photos keep their own folder in `path`); the same id under two label folders stays two groups, as a
resubmission. Photos in sub-folders of a group folder belong to the group (`nested="include"`) or
are listed as skipped (`nested="skip"`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

LABEL_FOLDERS = {"审核通过": "pass", "审核不通过": "fail"}
# Unlabelled submissions waiting for a production verdict (qc_verdicts); never training data.
INBOX_FOLDER = "待审核"
INBOX_KEY = "inbox"  # stands in for the label in keys and record ids of inbox groups
INBOX_SKIP_REASON = "inbox folder (unlabelled, judged by qc_verdicts, never training data)"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# The GRPO proposal's ticket id (seed 003): QC-<kind>-<yyyymmdd>-<n>; capture group 1 is the id.
DEFAULT_GROUP_ID_PATTERN = r"^(QC-[A-Za-z]+-[0-9]{8}-[0-9]+)"
NESTED_MODES = ("include", "skip")


def compile_group_id_pattern(pattern: str) -> re.Pattern:
    """The compiled pattern; ValueError when it does not compile or has no capture group."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"group_id_pattern {pattern!r} is not a valid regex: {e}") from e
    if compiled.groups < 1:
        raise ValueError(f"group_id_pattern {pattern!r} needs a capture group: the first group is the group id")
    return compiled


def group_id_of(folder_name: str, pattern: str | re.Pattern = DEFAULT_GROUP_ID_PATTERN) -> str:
    """The group id of a group folder: the pattern's first capture group, or the whole name."""
    compiled = pattern if isinstance(pattern, re.Pattern) else compile_group_id_pattern(pattern)
    m = compiled.match(folder_name)
    return m.group(1) if m and m.group(1) else folder_name


@dataclass(frozen=True)
class ImageFile:
    path: str  # relative to the mission folder, posix style
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class Group:
    mission: str
    label: str | None  # "pass" | "fail"; None for an inbox group (no reviewer decision yet)
    group_id: str
    images: tuple[ImageFile, ...]
    folders: tuple[str, ...] = ()  # the group folders (relative to the mission folder) merged under this id

    @property
    def key(self) -> str:
        """Unique within a mission: a resubmitted group id exists once per label (and once in the inbox)."""
        return f"{self.label or INBOX_KEY}/{self.group_id}"


@dataclass(frozen=True)
class Skipped:
    path: str  # relative to the mission folder
    reason: str


@dataclass
class Discovery:
    mission: str
    mission_dir: Path
    groups: list[Group] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def image_count(self) -> int:
        return sum(len(g.images) for g in self.groups)


def natural_key(name: str) -> list:
    """Sort `2.jpg` before `10.jpg`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def discover(
    images_root: str | Path,
    mission: str,
    inbox: bool = False,
    group_id_pattern: str = DEFAULT_GROUP_ID_PATTERN,
    nested: str = "include",
) -> Discovery:
    """Labelled groups (default), or with `inbox=True` the unlabelled groups under INBOX_FOLDER only."""
    if nested not in NESTED_MODES:
        raise ValueError(f"nested must be one of {NESTED_MODES}, got {nested!r}")
    pattern = compile_group_id_pattern(group_id_pattern)
    root = Path(images_root).resolve()
    mission_dir = root / mission
    if not mission_dir.is_dir():
        raise ValueError(f"mission folder not found: {mission_dir} (expected <images_root>/<mission>/)")
    found = Discovery(mission=mission, mission_dir=mission_dir)

    def skip(path: Path, reason: str) -> None:
        found.skipped.append(Skipped(path.relative_to(mission_dir).as_posix(), reason))

    for label_dir in sorted(mission_dir.iterdir(), key=lambda p: natural_key(p.name)):
        if inbox != (label_dir.name == INBOX_FOLDER):
            if not inbox:  # the labelled run accounts for the inbox; the inbox run only looks at its folder
                skip(label_dir, INBOX_SKIP_REASON)
            continue
        if _leaves_root(label_dir, root):
            skip(label_dir, "symlink leaving the images root")
            continue
        if not label_dir.is_dir():
            skip(label_dir, "file outside a label folder")
            continue
        label = None if inbox else LABEL_FOLDERS.get(label_dir.name)
        if label is None and not inbox:
            skip(label_dir, f"unknown label folder (expected one of {sorted(LABEL_FOLDERS)} or {INBOX_FOLDER})")
            continue
        by_id: dict[str, tuple[list[str], list[ImageFile]]] = {}
        for group_dir in sorted(label_dir.iterdir(), key=lambda p: natural_key(p.name)):
            if _leaves_root(group_dir, root):
                skip(group_dir, "symlink leaving the images root")
                continue
            if not group_dir.is_dir():
                skip(group_dir, "file outside a group folder")
                continue
            images = _group_images(group_dir, mission_dir, root, skip, nested)
            if not images:
                skip(group_dir, "group has no usable images")
                continue
            folders, kept = by_id.setdefault(group_id_of(group_dir.name, pattern), ([], []))
            folders.append(group_dir.relative_to(mission_dir).as_posix())
            kept.extend(images)
        for gid, (folders, images) in by_id.items():
            found.groups.append(Group(mission, label, gid, tuple(images), tuple(folders)))
    return found


def _group_images(folder: Path, mission_dir: Path, root: Path, skip, nested: str) -> list[ImageFile]:
    images = []
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.is_dir() and not path.is_symlink() and nested == "include":
            images += _group_images(path, mission_dir, root, skip, nested)
            continue
        reason = _unusable_reason(path, root)
        if reason:
            skip(path, reason)
            continue
        try:
            data = path.read_bytes()
            with Image.open(path) as img:
                img.load()  # decodes fully, so a truncated file fails here and not mid-batch
                width, height = img.size
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            skip(path, f"unreadable image: {type(e).__name__}: {e}")
            continue
        rel = path.relative_to(mission_dir).as_posix()
        images.append(ImageFile(rel, hashlib.sha256(data).hexdigest(), width, height))
    return images


def _leaves_root(path: Path, root: Path) -> bool:
    return path.is_symlink() and not path.resolve().is_relative_to(root)


def _unusable_reason(path: Path, root: Path) -> str | None:
    if _leaves_root(path, root):
        return "symlink leaving the images root"
    if not path.exists():
        return "broken symlink"
    if path.is_dir():
        # a symlinked folder could loop back into the group; a real one is walked unless nested=skip
        return (
            "symlinked folder inside a group (not followed)"
            if path.is_symlink()
            else "nested folder inside a group (nested=skip)"
        )
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'!r})"
    if path.stat().st_size == 0:
        return "zero-byte file"
    return None


def unaccounted_files(mission_dir: str | Path, summarised: set[str], skipped: set[str], subdir: str = "") -> list[str]:
    """Files under the mission folder (or only under its `subdir`) neither summarised nor listed as skipped.

    A skipped folder (unknown label, group without usable images) covers everything inside it.
    Paths are relative to the mission folder either way.
    """
    mission_dir = Path(mission_dir)
    missing = []
    for path in sorted((mission_dir / subdir).rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(mission_dir).as_posix()
        parents = {p.as_posix() for p in Path(rel).parents}
        if rel not in summarised and rel not in skipped and not parents & skipped:
            missing.append(rel)
    return missing
