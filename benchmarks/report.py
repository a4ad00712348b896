"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections as they are."""

from pathlib import Path

from resources.store import atomic_write_text

DOC = Path("docs/benchmarks.md")


def write_section(doc: Path, section: str) -> None:
    """`section` starts with its `## Title` line; an existing section of that title is replaced."""
    title = section.splitlines()[0]
    if not title.startswith("## "):
        raise ValueError(f"a section must start with a '## ' title line, got {title!r}")
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n\n"
    start = text.find(title + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section.rstrip("\n") + "\n" + ("" if end == -1 else text[end:])
    atomic_write_text(doc, text)
