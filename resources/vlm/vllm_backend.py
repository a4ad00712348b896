"""Qwen3-VL through vLLM's offline engine (GPU only; `pip install .[vllm]`).

For a long-running deployment prefer `vllm serve` and an OpenAI-compatible client; this engine is
for batch jobs on a GPU node. vLLM is imported lazily so the rest of the project never needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from resources.vlm import VisionDecode, VisionOutput, VisionPrompt


class VLLMVisionModel:
    def __init__(self, model_path: str, dtype: str = "bfloat16", max_model_len: int = 8192,
                 gpu_memory_utilization: float = 0.85):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("the vllm backend needs vLLM on a GPU machine: pip install '.[vllm]'") from e
        from transformers import AutoProcessor

        self.model_path = model_path
        self._processor = AutoProcessor.from_pretrained(model_path)
        self._llm = LLM(model=model_path, dtype=dtype, max_model_len=max_model_len,
                        gpu_memory_utilization=gpu_memory_utilization, limit_mm_per_prompt={"image": 1})
        self._fingerprint = f"vllm-{hashlib.sha256(f'{model_path}|{dtype}'.encode()).hexdigest()[:12]}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def note(self) -> str:
        return ""

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]:
        from PIL import Image
        from vllm import SamplingParams

        from resources.vlm.transformers_backend import one_line

        requests = []
        for prompt in prompts:
            messages = [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]},
            ]
            text = self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            with Image.open(prompt.image_path) as img:
                requests.append({"prompt": text, "multi_modal_data": {"image": img.convert("RGB")}})
        params = SamplingParams(temperature=decode.temperature, top_p=decode.top_p, seed=decode.seed,
                                max_tokens=decode.max_new_tokens, repetition_penalty=decode.repetition_penalty)
        outputs = self._llm.generate(requests, params)
        return [
            VisionOutput(one_line(o.outputs[0].text), len(o.prompt_token_ids), len(o.outputs[0].token_ids),
                         "length" if o.outputs[0].finish_reason == "length" else "stop")
            for o in outputs
        ]
