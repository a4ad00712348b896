"""Dagster resource that picks and builds the chat LLM backend in one place.

Local default: the embedded SmolLM2-135M-Instruct GGUF via transformers on CPU. Production: the same
assets pointed at a real checkpoint, an OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp)
or the vLLM offline engine, e.g.

    LLMResource(backend="openai", base_url="http://vllm:8000/v1", model="Qwen/Qwen3-32B",
                api_key=dg.EnvVar("OPENAI_API_KEY"), structured_output="vllm", max_in_flight=64)
"""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.llm import ChatLLM

BACKENDS = ("transformers", "openai", "vllm")
_BUILT: dict[tuple, ChatLLM] = {}
_BUILT_LOCK = threading.Lock()


class LLMResource(dg.ConfigurableResource):
    backend: str = Field(default="transformers", description="transformers | openai | vllm")
    model_path: str = Field(
        default="",
        description="HF model folder, a folder holding `gguf_file`, or a .gguf file; empty = embedded SmolLM2 GGUF",
    )
    gguf_file: str | None = Field(default=None, description="GGUF file name inside model_path (transformers)")
    base_url: str = Field(default="", description="OpenAI-compatible base URL incl. /v1 (openai backend)")
    model: str = Field(default="", description="model id as the server names it (openai backend)")
    api_key: str | None = Field(default=None, description="bearer token; pass dg.EnvVar('...'), never a literal")
    max_in_flight: int = Field(default=8, description="max concurrent HTTP requests (openai backend)")
    timeout_s: float = Field(default=60.0, description="total deadline per HTTP request in seconds")
    max_retries: int = Field(default=3, description="retries on timeout/429/5xx (openai backend)")
    n_mode: str = Field(default="fanout", description="fanout (n requests, seeds seed+i) | native (send n)")
    device: str = Field(default="cpu", description="torch device (transformers backend)")
    dtype: str = Field(
        default="float32",
        description="float32 | bfloat16 | float16; vllm also auto, and its float32 (the CPU default) means auto",
    )
    batch_size: int = Field(default=8, description="conversations per generate call (transformers backend)")
    cpu_threads: int = Field(default=0, description="torch intra-op threads while decoding; 0 = torch default")
    structured_output: str = Field(
        default="none",
        description="how params.regex reaches an HTTP server: none | vllm | vllm_legacy | sglang | llama_cpp",
    )

    def validate_config(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("backend='openai' needs base_url, e.g. 'http://127.0.0.1:8000/v1'")
            if not self.model:
                raise ValueError("backend='openai' needs model, the model id the server serves")
        if self.backend == "vllm" and not self.model_path:
            raise ValueError("backend='vllm' needs model_path (a HF checkpoint folder or hub id)")
        if self.backend != "openai" and self.structured_output != "none":
            raise ValueError(
                f"structured_output={self.structured_output!r} only applies to backend='openai'; "
                f"backend={self.backend!r} constrains params.regex natively"
            )
        dtypes = ("float32", "bfloat16", "float16") + (("auto",) if self.backend == "vllm" else ())
        if self.dtype not in dtypes:
            raise ValueError(f"dtype must be one of {dtypes} for backend={self.backend!r}, got {self.dtype!r}")
        for name in ("max_in_flight", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0 = torch default), got {self.cpu_threads}")

    def transformers_location(self) -> tuple[Path, str | None]:
        """(folder, gguf_file) for the transformers backend, resolving the embedded default."""
        if not self.model_path:
            from resources.llm.smollm2 import smollm2_gguf_path

            gguf = smollm2_gguf_path()
            return gguf.parent, gguf.name
        path = Path(self.model_path).expanduser()
        if path.suffix == ".gguf":
            if self.gguf_file is not None:
                raise ValueError(f"model_path {path} is already a .gguf file; leave gguf_file unset")
            return path.parent, path.name
        return path, self.gguf_file

    def get_llm(self) -> ChatLLM:
        """Build the configured backend once per process and reuse it."""
        self.validate_config()
        key = tuple(sorted(self.model_dump().items()))
        with _BUILT_LOCK:
            if key not in _BUILT:
                _BUILT[key] = self._build()
            return _BUILT[key]

    def _build(self) -> ChatLLM:
        if self.backend == "transformers":
            from resources.llm.transformers_backend import TransformersChatLLM

            folder, gguf_file = self.transformers_location()
            return TransformersChatLLM(
                folder,
                gguf_file=gguf_file,
                device=self.device,
                dtype=self.dtype,
                batch_size=self.batch_size,
                num_threads=self.cpu_threads,
            )
        if self.backend == "openai":
            from resources.llm.openai_backend import OpenAIChatLLM

            return OpenAIChatLLM(
                self.base_url,
                self.model,
                api_key=self.api_key,
                max_in_flight=self.max_in_flight,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
                n_mode=self.n_mode,
                structured_output=self.structured_output,
            )
        from resources.llm.vllm_backend import VLLMChatLLM

        return VLLMChatLLM(self.model_path, dtype="auto" if self.dtype == "float32" else self.dtype)
