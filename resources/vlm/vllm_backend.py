"""Qwen3-VL through vLLM's offline engine (GPU only; `pip install .[vllm]`).

For a long-running deployment prefer `vllm serve` and the `openai` backend; this engine is for batch
jobs on a GPU node. vLLM is imported lazily (only when the engine is built), so the rest of the project
and the tests never need it; `VLLMEngineSettings` carries every engine setting from config, and the
engine factory can be swapped for a test double where no GPU exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from resources.vlm import DTYPES, VisionDecode, VisionOutput, VisionPrompt
from resources.vlm.transformers_backend import model_fingerprint, one_line


@dataclass(frozen=True)
class VLLMEngineSettings:
    model_path: str
    dtype: str = "bfloat16"
    tensor_parallel_size: int = 1  # GPUs the model is sharded over (those in CUDA_VISIBLE_DEVICES)
    gpu_memory_utilization: float = 0.85  # share of each GPU's memory vLLM may take (weights + KV cache)
    max_model_len: int = 8192  # prompt + image tokens + answer; bounds the KV cache per sequence

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("the vllm backend needs model_path (a Qwen3-VL checkpoint folder), got ''")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len < 256:
            raise ValueError(f"max_model_len must be >= 256 tokens, got {self.max_model_len}")

    def engine_kwargs(self) -> dict:
        """Keyword arguments of `vllm.LLM(...)`."""
        return {
            "model": self.model_path,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "limit_mm_per_prompt": {"image": 1},  # Stage-A sends one photo per prompt
        }


def _vllm_engine(**kwargs):
    try:
        from vllm import LLM
    except ImportError as e:
        raise ImportError("the vllm backend needs vLLM on a GPU machine: pip install '.[vllm]'") from e
    return LLM(**kwargs)


def _vllm_sampling_params(**kwargs):
    from vllm import SamplingParams

    return SamplingParams(**kwargs)


class VLLMVisionModel:
    def __init__(
        self,
        settings: VLLMEngineSettings,
        engine_factory: Callable[..., object] = _vllm_engine,
        sampling_params: Callable[..., object] = _vllm_sampling_params,
    ):
        from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

        self.settings = settings
        self._sampling_params = sampling_params
        # only for the chat template: vLLM runs its own copy of the image processor
        self._processor = ImageOnlyQwen3VLProcessor.from_pretrained(settings.model_path)
        self._llm = engine_factory(**settings.engine_kwargs())
        self._fingerprint = "vllm:" + model_fingerprint(settings.model_path, settings.dtype)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def note(self) -> str:
        return ""

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]:
        from PIL import Image

        requests = []
        for prompt in prompts:
            messages = [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]},
            ]
            text = self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            with Image.open(prompt.image_path) as img:
                request = {"prompt": text, "multi_modal_data": {"image": img.convert("RGB")}}
            if prompt.max_pixels is not None:
                # per request, so missions with different budgets can share one engine
                request["mm_processor_kwargs"] = {"max_pixels": prompt.max_pixels}
            requests.append(request)
        params = self._sampling_params(
            temperature=decode.temperature,
            top_p=decode.top_p,
            seed=decode.seed,
            max_tokens=decode.max_new_tokens,
            repetition_penalty=decode.repetition_penalty,
        )
        outputs = self._llm.generate(requests, params)
        return [
            VisionOutput(
                one_line(o.outputs[0].text),
                len(o.prompt_token_ids),
                len(o.outputs[0].token_ids),
                "length" if o.outputs[0].finish_reason == "length" else "stop",
            )
            for o in outputs
        ]
