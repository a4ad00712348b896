"""Dagster resource that picks and builds the chat LLM backend in one place.

Local default: the embedded SmolLM2-135M-Instruct GGUF on llama.cpp in-process (its Q4 weights as
they are, one thread unless `llama_threads` says otherwise). Production: the same assets pointed at
a real checkpoint on transformers, an OpenAI-compatible server (vLLM, SGLang, Ollama, llama-server)
or the vLLM offline engine, e.g.

    LLMResource(backend="openai", base_url="http://vllm:8000/v1", model="Qwen/Qwen3-32B",
                api_key=dg.EnvVar("OPENAI_API_KEY"), structured_output="vllm", max_in_flight=64)
    LLMResource(backend="vllm", model_path="Qwen/Qwen3-32B", dtype="bfloat16", tensor_parallel_size=4)
"""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.llm import ChatLLM
from resources.llm.thinking import THINKING_MODES

BACKENDS = ("llama_cpp", "transformers", "openai", "vllm")
_BUILT: dict[tuple, ChatLLM] = {}
_BUILT_LOCK = threading.Lock()


class LLMResource(dg.ConfigurableResource):
    backend: str = Field(default="llama_cpp", description="llama_cpp | transformers | openai | vllm")
    model_path: str = Field(
        default="",
        description="HF model folder, a folder holding `gguf_file`, or a .gguf file; empty = embedded SmolLM2 GGUF",
    )
    gguf_file: str | None = Field(
        default=None, description="GGUF file name inside model_path (transformers, llama_cpp)"
    )
    base_url: str = Field(default="", description="OpenAI-compatible base URL incl. /v1 (openai backend)")
    model: str = Field(default="", description="model id as the server names it (openai backend)")
    api_key: str | None = Field(default=None, description="bearer token; pass dg.EnvVar('...'), never a literal")
    max_in_flight: int = Field(default=8, description="max concurrent HTTP requests (openai backend)")
    timeout_s: float = Field(
        default=60.0, description="seconds an HTTP attempt may wait (the openai SDK's connect/read/write timeout)"
    )
    max_retries: int = Field(
        default=3, description="SDK retries on timeouts, connection errors, 408/409/429/5xx, honouring Retry-After"
    )
    n_mode: str = Field(default="fanout", description="fanout (n requests, seeds seed+i) | native (send n)")
    device: str = Field(default="cpu", description="torch device (transformers backend)")
    dtype: str = Field(
        default="float32",
        description="transformers: float32 | bfloat16 | float16; vllm: also auto, and its float32 (the CPU "
        "default) means auto. llama_cpp decodes the GGUF at its own quantisation and takes only the default",
    )
    batch_size: int = Field(default=8, description="conversations per generate call (transformers backend)")
    cpu_threads: int = Field(default=0, description="torch intra-op threads while decoding; 0 = torch default")
    llama_threads: int = Field(
        default=1,
        description="llama.cpp decode/prefill threads; 0 = every usable core. 1 by default: on cores shared with "
        "other work, spin-waiting llama.cpp threads are slower than one (docs/benchmarks.md, LLM CPU backends)",
    )
    n_ctx: int = Field(default=4096, description="llama.cpp context length in tokens (llama_cpp backend)")
    n_gpu_layers: int = Field(default=0, description="layers llama.cpp offloads to a GPU build; -1 = all")
    tensor_parallel_size: int = Field(default=1, description="GPUs one vLLM engine shards the model over (vllm)")
    gpu_memory_utilization: float = Field(default=0.9, description="share of GPU memory vLLM may take, (0, 1]")
    structured_output: str = Field(
        default="none",
        description="how params.constraint reaches an HTTP server: none | vllm | vllm_legacy | sglang | llama_cpp",
    )
    self_check: bool = Field(
        default=True,
        description="decode a few tokens in a child process before a local backend (llama_cpp, transformers) "
        "first loads in this process, so a crashing native build stops with a clear error (resources/self_check.py)",
    )
    thinking: str = Field(
        default="off",
        description="Qwen3-style thinking: off (enable_thinking=false in the chat template) | on | omit (send no "
        "chat_template_kwargs, for servers that reject unknown fields); a leading <think> block is always cut",
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
                f"backend={self.backend!r} constrains params.constraint natively"
            )
        dtypes = {"llama_cpp": ("float32",), "vllm": ("float32", "bfloat16", "float16", "auto")}.get(
            self.backend, ("float32", "bfloat16", "float16")
        )
        if self.dtype not in dtypes:
            raise ValueError(f"dtype must be one of {dtypes} for backend={self.backend!r}, got {self.dtype!r}")
        for name in ("max_in_flight", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0 = torch default), got {self.cpu_threads}")
        if self.llama_threads < 0:
            raise ValueError(f"llama_threads must be >= 0 (0 = every usable core), got {self.llama_threads}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.thinking not in THINKING_MODES:
            raise ValueError(f"thinking must be one of {THINKING_MODES}, got {self.thinking!r}")

    def transformers_location(self) -> tuple[Path, str | None]:
        """(folder, gguf_file) for the transformers and llama_cpp backends, resolving the embedded default."""
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

    def llama_cpp_location(self) -> tuple[Path, str]:
        folder, gguf_file = self.transformers_location()
        if gguf_file is None:
            raise ValueError(
                f"backend='llama_cpp' needs a .gguf file; model_path {self.model_path!r} is a folder without "
                "gguf_file (set gguf_file, or use backend='transformers' for a HF checkpoint)"
            )
        return folder, gguf_file

    def get_llm(self) -> ChatLLM:
        """Build the configured backend once per process and reuse it."""
        self.validate_config()
        key = tuple(sorted(self.model_dump().items()))
        with _BUILT_LOCK:
            if key not in _BUILT:
                self.check_backend()
                _BUILT[key] = self._build()
            return _BUILT[key]

    def check_backend(self) -> float | None:
        """The self-check of a local backend: seconds it took (0.0 once it passed in this process); None for
        remote backends, whose engines live in other processes."""
        if not self.self_check or self.backend not in ("llama_cpp", "transformers"):
            return None
        from resources.self_check import llm_probe, run_self_check

        folder, gguf_file = self.llama_cpp_location() if self.backend == "llama_cpp" else self.transformers_location()
        return run_self_check(
            self.backend, llm_probe(self.backend, str(folder), gguf_file, self.device, self.dtype, self.n_gpu_layers)
        )

    def _build(self) -> ChatLLM:
        if self.backend == "llama_cpp":
            from resources.llm.llama_cpp_backend import LlamaCppChatLLM

            folder, gguf_file = self.llama_cpp_location()
            return LlamaCppChatLLM(
                folder / gguf_file,
                n_ctx=self.n_ctx,
                n_threads=self.llama_threads,
                n_gpu_layers=self.n_gpu_layers,
                thinking=self.thinking,
            )
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
                thinking=self.thinking,
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
                thinking=self.thinking,
            )
        from resources.llm.vllm_backend import VLLMChatLLM

        return VLLMChatLLM(self.model_path, **self.vllm_settings())

    def vllm_settings(self) -> dict:
        """Engine settings for the vllm backend (a plain dict, so the plumbing is testable without vLLM)."""
        return {
            "dtype": "auto" if self.dtype == "float32" else self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "thinking": self.thinking,
        }
