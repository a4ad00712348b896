"""benchmarks/gpu_suite.sh end to end on the CPU with tiny sizes: the GPU run is then one command.

Each run happens in a temporary directory, so the repository's docs/benchmarks.md is not touched.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
TINY = ["--device", "cpu", "--size", "tiny", "--dtype", "float32", "--images", "4", "--new-tokens", "4", "--batch", "2"]


def _suite(tmp_path, *args):
    out = subprocess.run(
        ["bash", str(SUITE), *args, "--work", str(tmp_path / "work")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    doc = tmp_path / "docs" / "benchmarks.md"
    return out, doc.read_text(encoding="utf-8") if doc.exists() else ""


def test_stage_a_step_runs_on_cpu_and_writes_its_sections(tmp_path):
    out, doc = _suite(tmp_path, *TINY, "--steps", "stage_a")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "## Stage-A throughput (tiny, cpu)" in doc and "| 2 |" in doc
    assert "| stage_a | ok |" in doc
    assert "bash benchmarks/gpu_suite.sh --device cpu --size tiny" in doc  # the exact command


def test_a_failing_step_is_reported_and_the_suite_exits_1(tmp_path):
    out, doc = _suite(tmp_path, *TINY[:4], "--dtype", "float8", "--steps", "stage_a")
    assert out.returncode == 1
    assert "| stage_a | failed (exit 1) |" in doc
    assert "## Stage-A throughput" not in doc


def test_a_step_over_its_time_limit_is_killed_and_reported(tmp_path):
    out, doc = _suite(tmp_path, *TINY, "--steps", "stage_a", "--step-limit-s", "1")
    assert out.returncode == 1
    assert "| stage_a | timed out after 1s |" in doc


def test_unknown_options_and_steps_are_refused(tmp_path):
    assert _suite(tmp_path, "--gpus", "2")[0].returncode == 2
    out, _ = _suite(tmp_path, "--steps", "stage_a,warp_drive")
    assert out.returncode == 2 and "unknown step 'warp_drive'" in out.stderr


@pytest.mark.skipif(
    not (ROOT / "benchmarks" / "merged_checkpoint_load.py").exists(),
    reason="benchmarks/merged_checkpoint_load.py comes from branch student; runs once merged",
)
def test_every_step_runs_on_cpu_with_tiny_sizes(tmp_path):
    out, doc = _suite(tmp_path, *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    for step in ("stage_a", "lora_step", "merged_load"):
        assert f"| {step} | ok |" in doc
