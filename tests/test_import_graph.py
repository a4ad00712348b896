"""The project's modules import each other in one direction: no import cycle, however the import is
written (top level, inside a function, or under TYPE_CHECKING). FastDistill reaches its models through
resources like every other stage: no module under qc_assets/fastdistill/ imports a backend class."""

import ast
import graphlib
import re
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


# A backend is a concrete model class (a chat backend, a trainer, the VL student): stage code gets them from
# a resource (LLMResource, TextStudentResource). The interfaces (`resources.llm`: ChatLLM, DecodeParams,
# Completion), the resources and the LoRA spec are fine.
BACKEND_MODULES = re.compile(
    r"^resources\.(llm\.(\w+_backend|transformers_constrained|smollm2)|vlm\.\w+_backend"
    r"|training\.(sft_\w+|student|student_chat|preference|session|trl_common))$"
)


def backend_imports(folder: Path) -> list[str]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    known = {module_name(p) for p in files}
    return sorted(
        f"{path.relative_to(folder)} imports {m}"
        for path in Path(folder).rglob("*.py")
        for m in imported_modules(path, known)
        if BACKEND_MODULES.match(m)
    )


def test_fastdistill_imports_no_backend_class():
    found = backend_imports(ROOT / "qc_assets" / "fastdistill")
    assert not found, f"FastDistill must get its models from a resource, not build a backend: {found}"


def test_the_backend_rule_catches_a_backend_import(tmp_path):
    (tmp_path / "student_run.py").write_text(
        "from resources.llm import ChatLLM\nfrom resources.training.text_student import TextStudentResource\n"
        "def f():\n    from resources.llm.transformers_backend import TransformersChatLLM\n",
        encoding="utf-8",
    )
    (tmp_path / "train.py").write_text("import resources.training.sft_text\n", encoding="utf-8")
    assert [line.split(" imports ")[1] for line in backend_imports(tmp_path)] == [
        "resources.llm.transformers_backend",
        "resources.training.sft_text",
    ]


def imports_of(folder: Path, forbidden: set[str]) -> list[str]:
    """`file imports module` for each import in `folder` whose top-level package is in `forbidden`."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            found += [f"{path.relative_to(folder)} imports {n}" for n in names if n.split(".")[0] in forbidden]
    return found


# tests/ puts its own folder on sys.path: `support` and `conftest` are tests' modules too
TESTS_MODULES = {"tests", "support", "conftest"}


def test_tests_and_benchmarks_do_not_import_each_other():
    """Both import the named test doubles from resources/doubles/; a test runs a benchmark as a process."""
    assert not imports_of(ROOT / "tests", {"benchmarks"})
    assert not imports_of(ROOT / "benchmarks", TESTS_MODULES)


def test_the_tests_benchmarks_rule_catches_an_import(tmp_path):
    (tmp_path / "bench.py").write_text("def f():\n    from support.llm import TEST_THREADS\n", encoding="utf-8")
    (tmp_path / "test_x.py").write_text("import benchmarks.lora_step\n", encoding="utf-8")
    assert imports_of(tmp_path, TESTS_MODULES) == ["bench.py imports support.llm"]
    assert imports_of(tmp_path, {"benchmarks"}) == ["test_x.py imports benchmarks.lora_step"]
