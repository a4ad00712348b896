"""GPU-ready VLM settings: every one from the environment or resource config, and each reaches its backend.

vLLM cannot run here (GPU only, not installed), so the engine is `RecordingVLLMEngineDouble`, a test
double that records what `vllm.LLM(...)` and `LLM.generate(...)` would have received; the chat
template and fingerprint come from the real tiny Qwen3-VL checkpoint.
"""

import importlib.util
from types import SimpleNamespace

import dagster as dg
import pytest
import torch
from PIL import Image

from qc_assets.missions import DEFAULT_MAX_PIXELS, Mission, get_mission, load_missions_file
from resources.vlm import VisionDecode, VisionPrompt
from resources.vlm.resource import VLMResource, vlm_from_env
from resources.vlm.transformers_backend import TransformersVLM, _load
from resources.vlm.vllm_backend import VLLMEngineSettings, VLLMVisionModel


class RecordingVLLMEngineDouble:
    """Stands in for `vllm.LLM`: records its settings and requests, answers shaped like RequestOutput."""

    def __init__(self, **kwargs):
        self.kwargs, self.requests, self.params = kwargs, [], None

    def generate(self, requests, params):
        self.requests, self.params = requests, params
        return [
            SimpleNamespace(
                prompt_token_ids=[1] * 7,
                outputs=[SimpleNamespace(text=f"answer {i}\n", token_ids=[1, 2], finish_reason="stop")],
            )
            for i, _ in enumerate(requests)
        ]


def test_every_vlm_setting_comes_from_the_environment(monkeypatch):
    env = {
        "QC_VLM_BACKEND": "vllm",
        "QC_VLM_MODEL": "/models/qwen3vl",
        "QC_DEVICE": "cuda",
        "QC_DTYPE": "float16",
        "QC_VLM_DTYPE": "bfloat16",
        "QC_VLM_MAX_IN_FLIGHT": "64",
        "QC_VLM_TIMEOUT_S": "30",
        "QC_VLM_MAX_RETRIES": "5",
        "QC_VLM_TENSOR_PARALLEL_SIZE": "2",
        "QC_VLM_GPU_MEMORY_UTILIZATION": "0.6",
        "QC_VLM_MAX_MODEL_LEN": "16384",
        "QC_VLM_API_KEY": "secret",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    vlm = vlm_from_env()
    assert (vlm.backend, vlm.model_path, vlm.device, vlm.dtype) == ("vllm", "/models/qwen3vl", "cuda", "bfloat16")
    assert (vlm.max_in_flight, vlm.timeout_s, vlm.max_retries) == (64, 30.0, 5)
    assert isinstance(vlm.api_key, dg.EnvVar) and vlm.api_key.get_value() == "secret"  # a secret stays an EnvVar
    assert vlm.vllm_settings().engine_kwargs() == {
        "model": "/models/qwen3vl",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.6,
        "max_model_len": 16384,
        "limit_mm_per_prompt": {"image": 1},
    }
    monkeypatch.delenv("QC_VLM_DTYPE")
    assert vlm_from_env().dtype == "float16"  # falls back to the shared QC_DTYPE


def test_a_malformed_number_names_its_variable(monkeypatch):
    monkeypatch.setenv("QC_VLM_TENSOR_PARALLEL_SIZE", "two")
    with pytest.raises(ValueError, match="QC_VLM_TENSOR_PARALLEL_SIZE must be an integer, got 'two'"):
        vlm_from_env()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be >= 1"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization must be in"),
        ({"dtype": "bf16"}, "dtype must be one of"),
        ({"device": "cpu"}, "set device 'cuda'"),
        ({"model_path": ""}, "needs model_path"),
    ],
)
def test_bad_vllm_settings_are_refused_before_any_engine_starts(change, message):
    settings = {"backend": "vllm", "model_path": "/models/x", "device": "cuda", "dtype": "bfloat16", **change}
    with pytest.raises(ValueError, match=message):
        VLMResource(**settings).get_vlm()


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here, so its absence cannot be shown"
)
def test_without_vllm_the_backend_says_how_to_install_it(tiny_vlm_dir):
    with pytest.raises(ImportError, match=r"pip install '\.\[vllm\]'"):
        VLMResource(backend="vllm", model_path=str(tiny_vlm_dir), device="cuda", dtype="bfloat16").get_vlm()


def test_vllm_engine_gets_the_settings_and_each_request_its_image_budget(tiny_vlm_dir, sample_images):
    settings = VLLMEngineSettings(
        str(tiny_vlm_dir), "bfloat16", tensor_parallel_size=4, gpu_memory_utilization=0.5, max_model_len=4096
    )
    vlm = VLLMVisionModel(settings, engine_factory=RecordingVLLMEngineDouble, sampling_params=dict)
    engine = vlm._llm
    assert engine.kwargs["tensor_parallel_size"] == 4 and engine.kwargs["gpu_memory_utilization"] == 0.5
    assert engine.kwargs["dtype"] == "bfloat16" and engine.kwargs["max_model_len"] == 4096
    images = sorted((sample_images / "RRU安装检查").rglob("*.jpg"))[:2]
    prompts = [VisionPrompt(str(images[0]), "s", "u", 2048 * 32 * 32), VisionPrompt(str(images[1]), "s", "u")]
    out = vlm.generate(prompts, VisionDecode(max_new_tokens=5, repetition_penalty=1.1))
    assert engine.requests[0]["mm_processor_kwargs"] == {"max_pixels": 2048 * 32 * 32}
    assert "mm_processor_kwargs" not in engine.requests[1]  # no budget: the engine's own setting
    assert "<|image_pad|>" in engine.requests[0]["prompt"]
    assert engine.params["max_tokens"] == 5 and engine.params["repetition_penalty"] == 1.1
    assert [o.text for o in out] == ["answer 0", "answer 1"]
    assert vlm.fingerprint.startswith("vllm:") and "bfloat16" not in vlm.fingerprint


def test_dtype_and_device_reach_the_transformers_model(tiny_vlm_dir):
    vlm = VLMResource(model_path=str(tiny_vlm_dir), device="cpu", dtype="bfloat16").get_vlm()
    model, _ = _load(vlm.model_path, "cpu", "bfloat16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert vlm.fingerprint != TransformersVLM(str(tiny_vlm_dir)).fingerprint  # dtype is in the resume key


def test_image_budget_reaches_the_qwen3vl_processor(tiny_vlm, tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 300), (90, 120, 30)).save(path)
    decode = VisionDecode(max_new_tokens=2)

    def prompt_tokens(max_pixels):
        return tiny_vlm.generate([VisionPrompt(str(path), "s", "u", max_pixels)], decode)[0].prompt_tokens

    small, large = prompt_tokens(64 * 64), prompt_tokens(1024 * 32 * 32)
    assert small < prompt_tokens(None) < large  # the saved processor budget (256x256) sits between
    # one visual token per 32x32 pixels: 400x300 fits the large budget as 384x288 (108 tokens) and is
    # scaled down to 64x32 (2 tokens) for the small one; the text is the same
    assert large - small == 108 - 2
    with pytest.raises(ValueError, match="one batch must share one max_pixels"):
        tiny_vlm.generate([VisionPrompt(str(path), "s", "u", 4096), VisionPrompt(str(path), "s", "u")], decode)


def test_rru_missions_get_a_larger_image_budget_than_bbu(tmp_path):
    assert get_mission("RRU安装检查").max_pixels == DEFAULT_MAX_PIXELS["rru"] > DEFAULT_MAX_PIXELS["bbu"]
    assert get_mission("BBU接地线检查").max_pixels == DEFAULT_MAX_PIXELS["bbu"]
    extra = tmp_path / "missions.yaml"
    extra.write_text("- {name: 远景检查, domain: rru, focus: 看远处的设备, max_pixels: 4194304}\n", encoding="utf-8")
    assert load_missions_file(extra)[0].max_pixels == 4194304
    with pytest.raises(ValueError, match="max_pixels must be an integer >= 1024"):
        Mission("小图", "bbu", "焦点", max_pixels=100)


def test_fingerprint_changes_with_the_processor_config_not_only_the_weights(tiny_vlm_dir, tmp_path):
    import shutil

    from resources.vlm.transformers_backend import model_fingerprint

    copy = shutil.copytree(tiny_vlm_dir, tmp_path / "tiny-qwen3vl")
    before = model_fingerprint(str(copy), "float32")
    config = (copy / "processor_config.json").read_text(encoding="utf-8")
    (copy / "processor_config.json").write_text(config.replace("65536", "65537"), encoding="utf-8")
    assert "65536" in config and model_fingerprint(str(copy), "float32") != before
