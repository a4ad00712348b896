"""LLMResource: config validation, backend selection, per-process reuse; vLLM import guard; SmolLM2 path."""

from __future__ import annotations

import importlib.util

import dagster as dg
import pytest
from llm_fixtures import OK_TEXT
from llm_fixtures import fault_server, smollm2_gguf  # noqa: F401  (pytest fixtures)

from resources.llm import DecodeParams
from resources.llm.openai_backend import OpenAIChatLLM
from resources.llm.resource import LLMResource
from resources.llm.smollm2 import smollm2_gguf_path


def test_smollm2_gguf_path_points_at_the_embedded_file():
    path = smollm2_gguf_path()
    assert path.is_file() and path.suffix == ".gguf" and "SmolLM2" in path.name


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"backend": "llamafile"}, "backend must be one of"),
        ({"backend": "openai", "model": "m"}, "base_url"),
        ({"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}, "model"),
        ({"backend": "vllm"}, "model_path"),
        ({"structured_output": "vllm"}, "only applies to backend='openai'"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"cpu_threads": -1}, "cpu_threads"),
        ({"dtype": "auto"}, "dtype must be one of"),
    ],
)
def test_bad_config_raises_clear_value_error(config, match):
    with pytest.raises(ValueError, match=match):
        LLMResource(**config).get_llm()


def test_default_is_the_embedded_smollm2(smollm2_gguf):
    folder, gguf_file = LLMResource().transformers_location()
    assert (folder, gguf_file) == (smollm2_gguf.parent, smollm2_gguf.name)
    assert LLMResource(model_path=str(smollm2_gguf)).transformers_location() == (folder, gguf_file)


@pytest.mark.slow
def test_transformers_backend_is_built_once_per_process():
    resource = LLMResource(cpu_threads=1, batch_size=2)
    llm = resource.get_llm()
    assert llm is LLMResource(cpu_threads=1, batch_size=2).get_llm()
    assert llm.fingerprint.startswith("transformers:SmolLM2")
    (row,) = llm.chat([[{"role": "user", "content": "Hi"}]], DecodeParams(max_new_tokens=4))
    assert row[0].ok and row[0].completion_tokens > 0


def test_openai_backend_through_dagster_with_env_var_key(fault_server, monkeypatch):
    monkeypatch.setenv("QC_TEST_LLM_KEY", "sk-test")
    fault_server.script("resource-openai", ["ok"])

    @dg.asset
    def verdict(llm: LLMResource) -> dg.MaterializeResult:
        chat_llm = llm.get_llm()
        assert isinstance(chat_llm, OpenAIChatLLM) and chat_llm.api_key == "sk-test"
        (row,) = chat_llm.chat([[{"role": "user", "content": "x"}]], DecodeParams(seed=1))
        return dg.MaterializeResult(metadata={"text": row[0].text, "fingerprint": chat_llm.fingerprint})

    resource = LLMResource(
        backend="openai",
        base_url=fault_server.base_url,
        model="resource-openai",
        api_key=dg.EnvVar("QC_TEST_LLM_KEY"),
        max_retries=0,
    )
    result = dg.materialize([verdict], resources={"llm": resource}, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (mat,) = result.asset_materializations_for_node("verdict")
    assert mat.metadata["text"].value == OK_TEXT
    assert fault_server.hits["resource-openai"] == 1
    assert fault_server.auth["resource-openai"] == ["Bearer sk-test"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed: the guard does not fire")
def test_vllm_backend_without_vllm_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install \.\[vllm\]"):
        LLMResource(backend="vllm", model_path="/models/qwen").get_llm()
