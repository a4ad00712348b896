"""FastDistill from the command line: a run file and nothing else (no demo defaults unless --demo),
the four seed recipes in configs/fastdistill/, Born-Again on the configured device, and the run
comparison report. The teacher is `FaultInjectionServer`, a test-only OpenAI-shaped server on
127.0.0.1 (its answers are not SQL, so nothing is kept: the test is about the plumbing)."""

import json
from pathlib import Path

import pytest
import yaml

from qc_assets.cli import fastdistill as fastdistill_cli
from qc_assets.fastdistill import compare
from qc_assets.fastdistill.assets import born_again_teacher
from qc_assets.fastdistill.config import FastDistillSettings, TextStudentConfig
from qc_assets.run_config import from_mapping
from resources.llm.resource import LLMResource
from resources.storage import StorageResource

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "fastdistill"


def test_the_four_seed_recipes_load_and_say_what_the_seed_asks():
    files = {p.stem.split("_")[1]: fastdistill_cli.load_run_file(p) for p in sorted(RECIPES.glob("recipe_*.yaml"))}
    assert sorted(files) == ["a", "b", "c", "d"]
    a, b, c, d = (FastDistillSettings.from_dict(files[k]["run"]) for k in "abcd")
    assert a.recipe == "rationale" and a.max_new_tokens >= 256  # room for a rationale plus the SQL
    assert b.n > 1 and b.temperature > 0 and b.max_per_input > 1  # Data Distillation
    assert c.teacher_from_run == "recipe_b"  # Born-Again: recipe B's student teaches
    assert files["c"]["teacher"]["device"] == "cuda" and files["c"]["teacher"]["dtype"] == "bfloat16"
    assert d.n > 1  # Preference KD needs several samples per question to pair
    student = from_mapping(TextStudentConfig, files["a"]["student"])
    assert (student.lora.max_steps, student.lora.max_length, student.eval_max_new_tokens) == (200, 768, 320)
    for key in "abd":
        teacher = files[key]["teacher"]
        assert teacher["base_url"] == "http://localhost:11434/v1" and teacher["timeout_s"] == 240
        LLMResource(**teacher)  # every block is a valid teacher resource


@pytest.mark.parametrize(
    "text, message",
    [
        ("run: {recipe: poem}\n", "recipe must be one of"),
        ("run: {}\nstudents: {}\n", "unknown top-level keys \\['students'\\]"),
        ("run: {max_tokens: 3}\n", "unknown run config keys \\['max_tokens'\\]"),
        ("run: {}\nteacher: {api_key: sk-1}\n", "must not be written in a file"),
        ("run: {}\nstudent: {steps: 3}\n", "student: unknown keys \\['steps'\\]"),
        ("run: {}\nstudent: {lora: {r: 0}}\n", "lora.r must be an integer >= 1"),
        ("run: {}\nstudent: {lora: {rank: 4}}\n", "student.lora: unknown keys \\['rank'\\]"),
    ],
)
def test_a_bad_run_file_fails_before_anything_runs(tmp_path, text, message):
    (tmp_path / "run.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        fastdistill_cli.load_run_file(tmp_path / "run.yaml")


def test_the_cli_needs_a_run_file_or_demo():
    with pytest.raises(SystemExit, match="give --config run.yaml"):
        fastdistill_cli.main(["r0"])


def test_born_again_loads_the_student_on_the_teachers_device_and_dtype(tmp_path):
    storage = StorageResource(data_root=str(tmp_path))
    model_dir = tmp_path / "fastdistill" / "b" / "train" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    teacher = LLMResource(
        backend="openai",
        base_url="http://127.0.0.1:1/v1",
        model="m",
        structured_output="vllm",
        device="cuda:1",
        dtype="bfloat16",
        batch_size=16,
        cpu_threads=2,
    )
    born = born_again_teacher(FastDistillSettings(teacher_from_run="b"), storage, teacher)
    assert isinstance(born, LLMResource)  # the teacher resource with a new model path, not a backend built here
    assert (born.backend, born.model_path, born.device, born.dtype) == (
        "transformers",
        str(model_dir),
        "cuda:1",
        "bfloat16",
    )
    assert (born.batch_size, born.cpu_threads, born.gguf_file) == (16, 2, None)
    born.validate_config()
    with pytest.raises(ValueError, match="has no trained student"):
        born_again_teacher(FastDistillSettings(teacher_from_run="nope"), storage, teacher)


def write_run_file(path: Path, server, **run) -> Path:
    body = {
        "run": {"source": "synthetic", "max_train": 2, "max_dev": 1, "max_new_tokens": 17, **run},
        "teacher": {"backend": "openai", "base_url": server.base_url, "model": "fd-cli", "max_retries": 0},
    }
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_a_run_file_runs_without_demo_defaults_and_runs_compare(fault_server, tmp_path, monkeypatch):
    fault_server.script("fd-cli", ["ok"])
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QC_DATA_ROOT", str(tmp_path / "data"))
    assert (
        fastdistill_cli.main(
            ["one", "--config", str(write_run_file(tmp_path / "a.yaml", fault_server)), "--no-student"]
        )
        == 0
    )
    recorded = json.loads((tmp_path / "data" / "fastdistill" / "one" / "run_config.json").read_text())["config"]
    assert recorded["max_new_tokens"] == 17
    # the demo would have set chunk_size 8 and require_gold_match false
    assert recorded == {**FastDistillSettings().as_dict(), "max_train": 2, "max_dev": 1, "max_new_tokens": 17}
    assert fault_server.hits["fd-cli"] == 2  # the file's teacher answered, not the embedded demo model

    assert (
        fastdistill_cli.main(
            [
                "two",
                "--config",
                str(write_run_file(tmp_path / "b.yaml", fault_server, n=2, temperature=0.7)),
                "--no-student",
            ]
        )
        == 0
    )
    paths = compare.main(["one", "two"])
    text = paths["markdown"].read_text(encoding="utf-8")
    assert "| one | sql | 1 | 0.000 |" in text and "| two | sql | 2 | 0.700 |" in text
    assert text.count(compare.NO_STUDENT) == 6  # no student trained: said, not filled in
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="run 'three': no folder"):
        compare.main(["one", "three"])
