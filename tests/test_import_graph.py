"""The project's modules import each other in one direction: no import cycle, however the import is
written (top level, inside a function, or under TYPE_CHECKING)."""

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qc_assets", "resources")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports: `import a.b`, `from a.b import c` (module a.b.c if it is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    known = {module_name(p) for p in files}
    graph = {}
    for path in files:
        name = module_name(path)
        # a package's own submodules importing the package (`from resources.llm import Completion`) is not
        # a cycle between files unless the package's __init__ imports them back, which is then reported
        graph[name] = {m for m in imported_modules(path, known) if m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_no_import_cycle_between_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_finder_reports_a_cycle():
    with pytest.raises(AssertionError, match="a -> b -> a|b -> a -> b"):
        cycle = find_cycle({"a": {"b"}, "b": {"a"}})
        assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
