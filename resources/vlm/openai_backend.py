"""Qwen3-VL behind an OpenAI-compatible server (`vllm serve`, SGLang): the usual production path.

Images travel inline as base64 data URLs, so the server needs no access to our file system. The HTTP
client (bounded in-flight requests, timeouts, retries) is the text LLM's `OpenAIChatLLM`. A request
that still fails raises: Stage-A has already saved every finished batch, so a re-run continues there.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Sequence
from pathlib import Path

from resources.llm import DecodeParams
from resources.llm.openai_backend import OpenAIChatLLM
from resources.vlm import VisionDecode, VisionOutput, VisionPrompt


def image_data_url(path: str | Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


class OpenAIVisionModel:
    def __init__(self, client: OpenAIChatLLM):
        self.client = client

    @property
    def fingerprint(self) -> str:
        return self.client.fingerprint

    @property
    def note(self) -> str:
        return ""

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]:
        from resources.vlm.transformers_backend import one_line

        conversations = [
            [{"role": "system", "content": p.system},
             {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(p.image_path)}},
                                          {"type": "text", "text": p.user}]}]
            for p in prompts
        ]
        params = DecodeParams(temperature=decode.temperature, top_p=decode.top_p,
                              max_new_tokens=decode.max_new_tokens, seed=decode.seed)
        results = self.client.chat(conversations, params)
        failed = [(p.image_path, c[0].error) for p, c in zip(prompts, results) if not c[0].ok]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(prompts)} VLM requests failed, first: {failed[0]}")
        return [VisionOutput(one_line(c[0].text), c[0].prompt_tokens, c[0].completion_tokens,
                             "length" if c[0].finish_reason == "length" else "stop") for c in results]
