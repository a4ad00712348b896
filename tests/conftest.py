"""Shared fixtures: the tiny Qwen3-VL smoke model (built once per session), sample images, and the
fixtures of tests/support/ (the embedded LLM, a real llama.cpp server, the scripted LLM doubles, one
torch thread), registered here so a test module names a fixture without importing it."""

import os
import shutil

import pytest
from support.fusion import one_torch_thread  # noqa: F401 (fixture)
from support.llm import fault_server, llama_server, scripted_server, smollm2_gguf, smollm2_llm  # noqa: F401 (fixtures)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# no step retries with backoff in unit tests: a test that expects a failure would re-run the step and
# wait; the production tests set their own value (qc_assets/gpu_steps.py)
os.environ.setdefault("QC_MODEL_RETRIES", "0")


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    from resources.vlm.tiny_qwen3vl import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("models") / "tiny-qwen3vl")


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir):
    from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE
    from resources.vlm.transformers_backend import TransformersVLM

    return TransformersVLM(str(tiny_vlm_dir), note=SMOKE_MODEL_NOTE)


@pytest.fixture(scope="session")
def _sample_images_master(tmp_path_factory):
    from qc_assets.cli.sample_data import write_sample_images

    return write_sample_images(tmp_path_factory.mktemp("master") / "images", groups_per_label=2)


@pytest.fixture
def sample_images(_sample_images_master, tmp_path):
    """A fresh copy per test, so a test may add or break files freely."""
    target = tmp_path / "images"
    shutil.copytree(_sample_images_master, target, symlinks=True)
    return target
