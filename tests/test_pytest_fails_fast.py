"""`make test` fails fast: a test that kills its own worker ends the run within minutes, naming the
test file it was running, instead of leaving the controller and the other workers waiting on each
other. Shown on a child pytest with the project's own pytest settings (pyproject.toml)."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KILLS_ITS_WORKER = """
import os, signal

def test_segfaults_like_a_native_crash():
    os.kill(os.getpid(), signal.SIGKILL)
"""

SLOW_NEIGHBOUR = """
import time, pytest

@pytest.mark.parametrize("n", range(4))
def test_takes_a_while(n):
    time.sleep(1)
"""


def test_a_crashed_worker_fails_the_run_fast_and_names_its_test_file(tmp_path):
    (tmp_path / "test_kills_its_worker.py").write_text(KILLS_ITS_WORKER)
    (tmp_path / "test_slow_neighbour.py").write_text(SLOW_NEIGHBOUR)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadfile",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert time.monotonic() - started < 120, out
    assert "test_kills_its_worker.py::test_segfaults_like_a_native_crash" in out, out
    assert "crashed and worker restarting disabled" in out, out


HANGS = """
import time

def test_waits_on_a_dead_peer():
    time.sleep(10**6)
"""


def test_a_hung_test_fails_with_a_timeout_instead_of_stalling_the_run(tmp_path):
    (tmp_path / "test_hangs.py").write_text(HANGS)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=3",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Timeout (>3.0s) from pytest-timeout" in out, out
