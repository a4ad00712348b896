"""The first decode of a local backend runs in a child process: a crash there is a clear error that
names the backend, the signal and the build to use, before any asset step starts."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from resources import self_check
from resources.llm.resource import LLMResource
from resources.self_check import SelfCheckError, run_self_check
from resources.vlm.resource import VLMResource

ROOT = Path(__file__).resolve().parents[1]
SEGFAULT = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]  # a real SIGSEGV, as a bad kernel gives


def test_a_crashing_child_becomes_a_clear_error_naming_backend_signal_and_build():
    with pytest.raises(SelfCheckError) as e:
        run_self_check("llama_cpp", SEGFAULT)
    message = str(e.value)
    assert "llama_cpp backend crashed with SIGSEGV" in message
    assert "this llama.cpp build: CPU :" in message and "GGML_NATIVE=OFF" in message


def test_a_local_llm_decodes_in_a_child_once_per_process(smollm2_gguf, monkeypatch):
    monkeypatch.setattr(self_check, "_PASSED", set())  # as in a new process: an earlier test may have checked it
    llm = LLMResource(model_path=str(smollm2_gguf))
    seconds = llm.check_backend()
    assert 0 < seconds < 60
    assert llm.check_backend() == 0.0, "once per process"
    assert LLMResource(backend="openai", base_url="http://127.0.0.1:9/v1", model="m").check_backend() is None
    assert LLMResource(model_path=str(smollm2_gguf), self_check=False).check_backend() is None


def test_a_broken_model_fails_the_self_check_before_the_backend_loads(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(SelfCheckError, match=r"llama_cpp backend failed its self-check \(exit 1\)"):
        LLMResource(model_path=str(broken)).get_llm()


def test_the_transformers_vlm_decodes_in_a_child(tiny_vlm_dir, monkeypatch):
    monkeypatch.setattr(self_check, "_PASSED", set())
    assert VLMResource(model_path=str(tiny_vlm_dir)).check_backend() > 0
    with pytest.raises(SelfCheckError, match="transformers backend failed its self-check"):
        VLMResource(model_path=str(tiny_vlm_dir), dtype="float16", device="no-such-device").check_backend()


def test_make_demo_stops_before_any_run_when_a_model_fails_its_self_check(tmp_path):
    from qc_assets.cli.sample_data import write_sample_images

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    write_sample_images(tmp_path / "data" / "images", groups_per_label=1)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "QC_DATA_ROOT": str(tmp_path / "data"),
        "QC_LLM_MODEL_PATH": str(broken),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "qc_assets.cli.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "self-check FAILED, nothing was run: llama_cpp backend failed its self-check" in done.stderr
    assert not dg.DagsterInstance.from_config(str(home)).get_run_records(), "no run started"
