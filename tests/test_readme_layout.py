"""The README's layout section matches the tree: every path it names exists, and every package folder of
qc_assets/, resources/ and tests/ is named there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block(readme: str) -> str:
    section = readme.split("## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def named_paths(block: str) -> set[str]:
    """The paths of the block's first column (23 characters wide; an indented entry is relative to the
    folder above it); description lines, which start blank, are skipped."""
    paths, top = set(), ""
    for line in block.splitlines():
        entry = line[:23]
        if not entry.strip():
            continue
        for name in re.findall(r"[\w.]+\.py|\w+/", entry):
            if entry.startswith(" "):
                paths.add(top + name.rstrip("/"))
            else:
                top = name if name.endswith("/") else top
                paths.add(name.rstrip("/"))
    return paths


def missing_from_layout(block: str) -> list[str]:
    named = named_paths(block)
    folders = [
        p
        for pkg in ("qc_assets", "resources", "tests")
        for p in (ROOT / pkg).iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    ]
    return sorted(str(p.relative_to(ROOT)) for p in folders if str(p.relative_to(ROOT)) not in named)


def test_every_path_the_layout_names_exists_and_every_package_is_named():
    block = layout_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert not [p for p in named_paths(block) if not (ROOT / p).exists()], "named in the layout, not in the tree"
    assert not missing_from_layout(block), "packages the layout does not name"


def test_the_layout_check_catches_a_stale_entry():
    block = "qc_assets/   the pipeline\n  fusion/    moved away\n"
    assert "qc_assets/fusion" in named_paths(block) and not (ROOT / "qc_assets" / "fusion").exists()
    assert "qc_assets/student" in missing_from_layout(block)
