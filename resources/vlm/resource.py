"""Dagster resource that picks the VLM backend from config; the model loads on first use in a run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from resources.store import data_root
from resources.vlm import VisionLanguageModel

BACKENDS = ("transformers", "openai", "vllm")


class VLMResource(dg.ConfigurableResource):
    """`model_path` empty = the tiny random-weight Qwen3-VL smoke model, built once under the data root.

    Production: `model_path=/models/Qwen3-VL-4B-Instruct, device=cuda, dtype=bfloat16`; or
    `backend=openai` with the `base_url` of `vllm serve <checkpoint>`; or `backend=vllm` (offline
    engine) on a GPU node.
    """

    backend: str = "transformers"
    model_path: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    base_url: str = ""  # openai backend, e.g. http://vllm:8000/v1
    model: str = ""  # openai backend: the model id the server serves
    api_key: str | None = None  # pass dg.EnvVar(...), never a literal
    max_in_flight: int = 16

    def get_vlm(self) -> VisionLanguageModel:
        if self.backend not in BACKENDS:
            raise ValueError(f"VLMResource.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "openai":
            from resources.llm.openai_backend import OpenAIChatLLM
            from resources.vlm.openai_backend import OpenAIVisionModel

            client = OpenAIChatLLM(self.base_url, self.model, self.api_key, max_in_flight=self.max_in_flight)
            return OpenAIVisionModel(client)
        if self.backend == "vllm":
            from resources.vlm.vllm_backend import VLLMVisionModel

            if not self.model_path:
                raise ValueError("the vllm backend needs model_path (a Qwen3-VL checkpoint folder)")
            return VLLMVisionModel(self.model_path, dtype=self.dtype)

        from resources.vlm.transformers_backend import TransformersVLM

        if self.model_path:
            return TransformersVLM(self.model_path, self.device, self.dtype)
        from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE, build_tiny_qwen3vl

        folder = build_tiny_qwen3vl(smoke_model_dir())
        return TransformersVLM(str(folder), self.device, self.dtype, note=SMOKE_MODEL_NOTE)


def smoke_model_dir() -> Path:
    return data_root() / "models" / "tiny-qwen3vl"
