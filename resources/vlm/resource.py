"""Dagster resource that picks the VLM backend from config; the model loads on first use in a run.

`vlm_from_env()` builds it from the QC_VLM_* environment (README "Configuration"), so the same
definitions run the CPU demo and a GPU node.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from resources.env import env, env_number
from resources.store import data_root
from resources.vlm import DTYPES, VisionLanguageModel

BACKENDS = ("transformers", "openai", "vllm")


class VLMResource(dg.ConfigurableResource):
    """`model_path` empty = the tiny random-weight Qwen3-VL smoke model, built once under the data root.

    Production: `model_path=/models/Qwen3-VL-4B-Instruct, device=cuda, dtype=bfloat16`; or
    `backend=openai` with the `base_url` of `vllm serve <checkpoint>`; or `backend=vllm` (offline
    engine) on a GPU node.
    """

    backend: str = "transformers"
    model_path: str = ""
    # transformers: any torch device (cpu, cuda, cuda:1), or several comma-separated (cuda:0,cuda:1): shard i
    # of a sharded step then uses the (i mod n)-th (`shard_device`); vllm: cuda only
    device: str = "cpu"
    dtype: str = "float32"  # transformers and vllm; the openai backend's server owns its dtype
    base_url: str = ""  # openai backend, e.g. http://vllm:8000/v1
    model: str = ""  # openai backend: the model id the server serves
    api_key: str | None = None  # pass dg.EnvVar(...), never a literal
    max_in_flight: int = 16  # openai backend: requests on the wire at once (not Stage-A's batch size)
    timeout_s: float = 120.0  # openai backend: per request
    max_retries: int = 3  # openai backend: the SDK's retries with backoff (connection, 408, 429, 5xx)
    tensor_parallel_size: int = 1  # vllm backend
    gpu_memory_utilization: float = 0.85  # vllm backend
    max_model_len: int = 8192  # vllm backend
    # decode a few tokens in a child process before the transformers backend first loads in this process, so a
    # crashing native build stops with a clear error before any asset step (resources/self_check.py)
    self_check: bool = True

    def get_vlm(self, device: str | None = None) -> VisionLanguageModel:
        """The backend; `device` (one of `devices()`, see `shard_device`) overrides `self.device`."""
        device = device or self.device
        if "," in device:
            raise ValueError(
                f"VLMResource.device lists several devices ({self.device!r}): a step loads the "
                f"model on one, pick it with shard_device(shard)"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"VLMResource.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"VLMResource.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.backend == "openai":
            from resources.vlm.openai_backend import OpenAIVisionModel

            return OpenAIVisionModel(
                self.base_url,
                self.model,
                self.api_key,
                max_in_flight=self.max_in_flight,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
            )
        if self.backend == "vllm":
            from resources.vlm.vllm_backend import VLLMVisionModel

            return VLLMVisionModel(self.vllm_settings())

        from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE
        from resources.vlm.transformers_backend import TransformersVLM

        self.check_backend(device)
        return TransformersVLM(
            str(self.model_folder()), device, self.dtype, note="" if self.model_path else SMOKE_MODEL_NOTE
        )

    def model_folder(self) -> Path:
        """The transformers backend's checkpoint: `model_path`, or the smoke model (built once)."""
        return Path(self.model_path) if self.model_path else _smoke_model()

    def check_backend(self, device: str | None = None) -> float | None:
        """The self-check of the transformers backend (seconds, once per process); None for the served
        backends (openai, vllm), whose engines live in other processes."""
        if self.backend != "transformers" or not self.self_check:
            return None
        from resources.self_check import run_self_check, vlm_probe

        return run_self_check("transformers", vlm_probe(str(self.model_folder()), device or self.device, self.dtype))

    def devices(self) -> list[str]:
        return [d.strip() for d in self.device.split(",") if d.strip()]

    def shard_device(self, shard: int) -> str:
        """The device shard `shard` loads its model on: the (shard mod n)-th of `device`'s list.

        With the multiprocess executor on one host, list the GPUs (cuda:0,...,cuda:7) and set the gpu
        pool to their number and `shards` to a multiple of it. With one Celery worker per GPU, leave
        `device=cuda`: each worker sees only its own GPU (CUDA_VISIBLE_DEVICES), whatever shard it takes.
        """
        devices = self.devices()
        if not devices:
            raise ValueError("VLMResource.device is empty: expected a torch device such as cpu, cuda or cuda:0")
        if len(devices) > 1 and self.backend != "transformers":
            raise ValueError(
                f"a device list ({self.device!r}) is for the transformers backend; the {self.backend} "
                f"backend's engine owns its devices (CUDA_VISIBLE_DEVICES, tensor_parallel_size)"
            )
        return devices[shard % len(devices)]

    def note(self) -> str:
        """What the model's `note` says, without loading it: the smoke model says so; a checkpoint says nothing."""
        if self.backend == "transformers" and not self.model_path:
            from resources.vlm.tiny_qwen3vl import SMOKE_MODEL_NOTE

            return SMOKE_MODEL_NOTE
        return ""

    def fingerprint(self) -> str:
        """The model fingerprint (part of Stage-A's resume key) without loading the model or its engine."""
        if self.backend == "openai":
            return self.get_vlm().fingerprint  # a client only: nothing loads
        from resources.vlm.transformers_backend import model_fingerprint

        if self.backend == "vllm":
            return "vllm:" + model_fingerprint(self.model_path, self.dtype)
        return model_fingerprint(str(self.model_folder()), self.dtype)

    def vllm_settings(self):
        """The vLLM engine settings (validated); builds nothing, so it runs where vLLM is not installed."""
        from resources.vlm.vllm_backend import VLLMEngineSettings

        if self.device != "cuda":
            raise ValueError(
                f"the vllm backend runs on the GPUs in CUDA_VISIBLE_DEVICES: set device 'cuda' "
                f"(QC_VLM_DEVICE=cuda), got {self.device!r}"
            )
        return VLLMEngineSettings(
            self.model_path, self.dtype, self.tensor_parallel_size, self.gpu_memory_utilization, self.max_model_len
        )


def smoke_model_dir() -> Path:
    return data_root() / "models" / "tiny-qwen3vl"


def _smoke_model() -> Path:
    from resources.vlm.tiny_qwen3vl import build_tiny_qwen3vl

    return Path(build_tiny_qwen3vl(smoke_model_dir()))


def vlm_from_env() -> VLMResource:
    """A VLMResource from QC_VLM_* (device and dtype fall back to the shared QC_DEVICE / QC_DTYPE)."""
    settings = {
        "backend": env("QC_VLM_BACKEND", "transformers"),
        "model_path": env("QC_VLM_MODEL", ""),
        "base_url": env("QC_VLM_BASE_URL", ""),
        "model": env("QC_VLM_SERVED_MODEL", ""),
        "device": env("QC_VLM_DEVICE", env("QC_DEVICE", "cpu")),
        "dtype": env("QC_VLM_DTYPE", env("QC_DTYPE", "float32")),
        "max_in_flight": env_number("QC_VLM_MAX_IN_FLIGHT", "16", int),
        "timeout_s": env_number("QC_VLM_TIMEOUT_S", "120", float),
        "max_retries": env_number("QC_VLM_MAX_RETRIES", "3", int),
        "tensor_parallel_size": env_number("QC_VLM_TENSOR_PARALLEL_SIZE", "1", int),
        "gpu_memory_utilization": env_number("QC_VLM_GPU_MEMORY_UTILIZATION", "0.85", float),
        "max_model_len": env_number("QC_VLM_MAX_MODEL_LEN", "8192", int),
    }
    if "QC_VLM_API_KEY" in os.environ:  # a secret: only ever through EnvVar
        settings["api_key"] = dg.EnvVar("QC_VLM_API_KEY")
    return VLMResource(**settings)
