"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections as they are."""

import os
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


def command_line(module: str, args, skip: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> str:
    """The command that reproduces a run: OMP_NUM_THREADS when set, then every option of `args`
    (`skip` left out, `flags` written bare when true)."""
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    options = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in (*skip, *flags)]
    options += [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k)]
    return f"{env}python -m {module} " + " ".join(options)
