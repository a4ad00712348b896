"""vLLM offline-engine chat backend (GPU only, optional extra `pip install .[vllm]`).

vLLM is imported inside the constructor so that this module, and everything that imports it, loads
on machines without vLLM. Most deployments reach vLLM through its OpenAI-compatible server instead
(`OpenAIChatLLM` with `structured_output="vllm"`); this class is for one-process batch jobs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from resources.llm import Completion, Conversation, DecodeParams
from resources.llm.thinking import chat_template_kwargs, split_think_block

_INSTALL_HINT = "the vLLM backend needs the optional extra: pip install .[vllm] (GPU machines only)"


def _structured_kwargs(vllm_sampling, params: DecodeParams) -> dict:
    if params.constraint is not None:
        constraint = {"regex": params.constraint.form("regex", "the vllm backend")}
    elif params.json_schema is not None:
        constraint = {"json": params.json_schema}
    else:
        return {}
    # vLLM >= 0.10.2 names it StructuredOutputsParams; older releases GuidedDecodingParams.
    if hasattr(vllm_sampling, "StructuredOutputsParams"):
        return {"structured_outputs": vllm_sampling.StructuredOutputsParams(**constraint)}
    return {"guided_decoding": vllm_sampling.GuidedDecodingParams(**constraint)}


class VLLMChatLLM:
    """`ChatLLM` over `vllm.LLM.chat`; `params.n` samples come from one request with seed `params.seed`."""

    def __init__(
        self,
        model_path: str | Path,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        thinking: str = "off",
    ) -> None:
        template_kwargs = chat_template_kwargs(thinking)  # a bad mode fails before vLLM is imported
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        try:
            import vllm
            import vllm.sampling_params as vllm_sampling
        except ImportError as e:
            raise ImportError(_INSTALL_HINT) from e
        self.template_kwargs = template_kwargs
        self._vllm = vllm
        self._sampling = vllm_sampling
        self.model_path = str(model_path)
        self.dtype = dtype
        kwargs = {"max_model_len": max_model_len} if max_model_len else {}
        self._engine = vllm.LLM(
            model=self.model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            **kwargs,
        )
        digest = hashlib.sha256(f"{self.model_path}|{dtype}".encode()).hexdigest()[:12]
        self._fingerprint = f"vllm:{Path(self.model_path).name}:{digest}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def chat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]:
        if params.json_schema is not None:
            raise ValueError(
                "params.json_schema is set (e.g. Stage-B reflection_json_schema=True) but the offline "
                "vllm backend does not pass JSON schemas yet; use the openai backend against "
                "`vllm serve`, or turn the flag off"
            )
        sampling = self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            **_structured_kwargs(self._sampling, params),
        )
        started = time.perf_counter()
        template = {"chat_template_kwargs": self.template_kwargs} if self.template_kwargs else {}
        outputs = self._engine.chat([list(c) for c in conversations], sampling, use_tqdm=False, **template)
        latency = time.perf_counter() - started
        results = []
        for output in outputs:
            prompt_tokens = len(output.prompt_token_ids or [])
            row = []
            for sample in output.outputs:
                text, think_extra = split_think_block(sample.text)
                row.append(
                    Completion(
                        text=text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(sample.token_ids),
                        finish_reason="length" if sample.finish_reason == "length" else "stop",
                        latency_s=latency,
                        extra={"seed": params.seed, "batch_size": len(conversations), **think_extra},
                    )
                )
            results.append(row)
        return results
