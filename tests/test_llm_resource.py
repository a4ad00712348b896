"""LLMResource: config validation, backend selection, per-process reuse, settings from the environment;
vLLM import guard and settings plumbing (through `vllm_engine_double`, a stand-in for the GPU engine,
which cannot run here); SmolLM2 path."""

from __future__ import annotations

import importlib.util
import sys
import types

import dagster as dg
import pytest

from resources.doubles.llm_servers import OK_TEXT
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
        ({"dtype": "bfloat16"}, "dtype must be one of"),  # llama_cpp decodes the GGUF as it is quantised
        ({"backend": "transformers", "dtype": "auto"}, "dtype must be one of"),
        ({"llama_threads": -1}, "llama_threads"),
        ({"backend": "vllm", "model_path": "/m", "tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"backend": "vllm", "model_path": "/m", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"thinking": "sometimes"}, "thinking"),
        ({"model_path": "/nowhere"}, "needs a .gguf file"),
    ],
)
def test_bad_config_raises_clear_value_error(config, match):
    with pytest.raises(ValueError, match=match):
        LLMResource(**config).get_llm()


def test_default_is_the_embedded_smollm2(smollm2_gguf):
    folder, gguf_file = LLMResource().transformers_location()
    assert (folder, gguf_file) == (smollm2_gguf.parent, smollm2_gguf.name)
    assert LLMResource(model_path=str(smollm2_gguf)).transformers_location() == (folder, gguf_file)


def test_llama_cpp_is_the_default_backend_and_built_once_per_process():
    llm = LLMResource(llama_threads=1).get_llm()
    assert llm is LLMResource(llama_threads=1).get_llm()
    assert llm.fingerprint.startswith("llama_cpp:SmolLM2")
    (row,) = llm.chat([[{"role": "user", "content": "Hi"}]], DecodeParams(max_new_tokens=4))
    assert row[0].ok and 0 < row[0].completion_tokens <= 4


@pytest.mark.slow
def test_transformers_backend_is_built_once_per_process():
    resource = LLMResource(backend="transformers", cpu_threads=1, batch_size=2)
    llm = resource.get_llm()
    assert llm is LLMResource(backend="transformers", cpu_threads=1, batch_size=2).get_llm()
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


def test_settings_come_from_the_environment(monkeypatch):
    from definitions import llm_from_env

    monkeypatch.setenv("QC_TEACHER_BACKEND", "vllm")
    monkeypatch.setenv("QC_TEACHER_MODEL_PATH", "/models/Qwen3-32B")
    monkeypatch.setenv("QC_TEACHER_DTYPE", "bfloat16")
    monkeypatch.setenv("QC_TEACHER_DEVICE", "cuda")
    monkeypatch.setenv("QC_TEACHER_TENSOR_PARALLEL_SIZE", "4")
    monkeypatch.setenv("QC_TEACHER_GPU_MEMORY_UTILIZATION", "0.85")
    monkeypatch.setenv("QC_TEACHER_THINKING", "on")
    monkeypatch.setenv("QC_LLM_DTYPE", "float16")
    monkeypatch.setenv("QC_LLM_BACKEND", "transformers")
    teacher, llm = llm_from_env("QC_TEACHER"), llm_from_env("QC_LLM")
    assert (teacher.backend, teacher.dtype, teacher.device) == ("vllm", "bfloat16", "cuda")
    assert teacher.vllm_settings() == {
        "dtype": "bfloat16",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.85,
        "thinking": "on",
    }
    assert (llm.backend, llm.dtype, llm.device) == ("transformers", "float16", "cpu")
    monkeypatch.delenv("QC_LLM_BACKEND")
    monkeypatch.delenv("QC_LLM_DTYPE")
    assert llm_from_env("QC_LLM").backend == "llama_cpp"


@pytest.fixture
def vllm_engine_double(monkeypatch):
    """A stand-in `vllm` package (the real engine needs a GPU): `LLM` records its settings and the
    chat call, and answers with a think block so the stripping is exercised."""
    calls: dict = {}

    class Output:
        def __init__(self, text):
            self.text, self.token_ids, self.finish_reason = text, [1, 2, 3], "stop"

    class LLM:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def chat(self, conversations, sampling, use_tqdm, **kwargs):
            calls["chat"] = kwargs
            return [
                types.SimpleNamespace(prompt_token_ids=[1], outputs=[Output(f"<think>想</think>{OK_TEXT}")])
                for _ in conversations
            ]

    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda **kw: ("structured", kw)
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.sampling_params = LLM, lambda **kw: kw, sampling
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return calls


def test_vllm_settings_reach_the_engine(vllm_engine_double):
    resource = LLMResource(
        backend="vllm",
        model_path="/models/Qwen3-32B",
        dtype="bfloat16",
        tensor_parallel_size=4,
        gpu_memory_utilization=0.8,
    )
    (row,) = resource.get_llm().chat([[{"role": "user", "content": "x"}]], DecodeParams())
    engine = vllm_engine_double["engine"]
    assert (engine["dtype"], engine["tensor_parallel_size"], engine["gpu_memory_utilization"]) == ("bfloat16", 4, 0.8)
    assert vllm_engine_double["chat"] == {"chat_template_kwargs": {"enable_thinking": False}}
    assert row[0].text == OK_TEXT and row[0].extra["reasoning"] == "想"


@pytest.mark.parametrize("kind", ["llm", "vlm"])
@pytest.mark.parametrize(
    "bad, match",
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "base_url must start"),
        ({"model": ""}, "model must be"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_both_openai_clients_refuse_settings_that_cannot_work(kind, bad, match):
    from resources.llm.openai_backend import OpenAIChatLLM
    from resources.vlm.openai_backend import OpenAIVisionModel

    settings = {
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "m",
        "max_in_flight": 4,
        "timeout_s": 5.0,
        "max_retries": 0,
        **bad,
    }
    client = OpenAIChatLLM if kind == "llm" else OpenAIVisionModel
    with pytest.raises(ValueError, match=match):
        client(**settings)
