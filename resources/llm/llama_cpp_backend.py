"""llama.cpp in-process chat backend (`llama_cpp.Llama`): a GGUF model decoded at its own quantisation.

The CPU default for the embedded SmolLM2 GGUF: transformers de-quantises a GGUF to float32 and
decodes it with torch, llama.cpp runs the Q4 weights directly (see docs/benchmarks.md, "LLM CPU
backends"). Conversations are decoded one after another on one `Llama` context per model, guarded
by a lock; `n_threads` threads decode and `n_threads_batch` threads prefill. The conversation up to
its last message (the system prompt Stage-B and the teacher share across calls) is prefilled once
and kept in the KV cache; see `_prefill_head`. Constraints map to
llama.cpp grammars: `params.constraint` through its GBNF (`OutputConstraint.gbnf`), `params.json_schema`
through `LlamaGrammar.from_json_schema`. `n_gpu_layers` offloads layers to a GPU build of llama.cpp.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from resources.llm import Completion, Conversation, DecodeParams
from resources.llm.thinking import chat_template_kwargs, split_think_block

_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    # Close while llama_cpp's module globals still exist: `Llama.__del__` at interpreter teardown
    # finds them already None and prints a TypeError.
    with _CACHE_LOCK:
        for llama in _CACHE.values():
            llama.close()
        _CACHE.clear()


def default_threads() -> int:
    """Every core this process may use (n_threads=0). llama.cpp's threads spin-wait for each other:
    more threads pay off on idle cores and cost on shared ones (benchmarks/llm_cpu_backends.py)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def load_llama(gguf_path: Path, n_ctx: int, n_threads: int, n_threads_batch: int, n_gpu_layers: int):
    """One `llama_cpp.Llama` per (file, context, threads, GPU layers) per process: loading maps the
    whole file and allocates the KV cache."""
    from llama_cpp import Llama

    key = (str(gguf_path), n_ctx, n_threads, n_threads_batch, n_gpu_layers)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = Llama(
                model_path=str(gguf_path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads_batch,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        return _CACHE[key]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaCppChatLLM:
    """`ChatLLM` over `llama_cpp.Llama.create_chat_completion`. Sample i of a conversation uses seed
    `params.seed + i`; greedy decoding (temperature 0) decodes once and repeats the answer n times."""

    def __init__(
        self,
        gguf_path: str | Path,
        n_ctx: int = 4096,
        n_threads: int = 0,
        n_threads_batch: int = 0,
        n_gpu_layers: int = 0,
        thinking: str = "off",
    ) -> None:
        path = Path(gguf_path).expanduser().resolve()
        if path.suffix != ".gguf" or not path.is_file():
            raise ValueError(f"the llama_cpp backend needs a .gguf file, got {gguf_path!r} (not a .gguf file)")
        if n_ctx < 64:
            raise ValueError(f"n_ctx must be >= 64, got {n_ctx}")
        for name, value in (("n_threads", n_threads), ("n_threads_batch", n_threads_batch)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 = every usable core), got {value}")
        self.gguf_path = path
        self.n_threads = n_threads or default_threads()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_gpu_layers = n_gpu_layers
        # Templates that know `enable_thinking` (Qwen3) honour it; others ignore the extra variable.
        self.template_kwargs = chat_template_kwargs(thinking) or {}
        self._llama = load_llama(path, n_ctx, self.n_threads, self.n_threads_batch, n_gpu_layers)
        self._formatter = self._chat_formatter()
        self._head: tuple[int, ...] | None = None  # the prefix whose KV the context holds (see _prefill_head)
        self._lock = threading.Lock()
        digest = hashlib.sha256(f"{path.name}|{path.stat().st_size}|gguf".encode()).hexdigest()[:12]
        self._fingerprint = f"llama_cpp:{path.stem}:{digest}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _chat_formatter(self):
        """The GGUF's own chat template, as `Llama` builds it, so the prompt tokens are ours to manage."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = self._llama
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(
                f"{self.gguf_path.name} carries no tokenizer.chat_template; the llama_cpp backend "
                "needs a chat model GGUF"
            )
        eos, bos = llama.token_eos(), llama.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def _tokens(self, messages: list[dict]) -> tuple[list[int], object]:
        formatted = self._formatter(messages=messages, **self.template_kwargs)
        prompt = formatted.prompt.encode("utf-8")
        return self._llama.tokenize(prompt, add_bos=not formatted.added_special, special=True), formatted

    def prompt_tokens(self, conversation: Conversation) -> tuple[list[int], int, object]:
        """(prompt tokens, length of the head shared with any conversation that differs only in its
        last message, formatter result)."""
        messages = [dict(m) for m in conversation]
        tokens, formatted = self._tokens(messages)
        head_tokens, _ = self._tokens([*messages[:-1], {**messages[-1], "content": ""}])
        head = common_prefix_len(tokens, head_tokens)
        return tokens, min(head, len(tokens) - 1), formatted

    def _prefill_head(self, tokens: list[int], head: int) -> None:
        """Leave exactly `tokens[:head]` in the KV cache, always computed as one prefill from empty.

        llama-cpp-python reuses any cached prefix; how much of the prompt is then decoded in one batch
        depends on what ran before, and a batch of a different size gives logits that differ in the
        last bits, so the same seed would sample differently. Here the cached part is always the
        conversation's head, prefilled alone, and the rest is always one batch: same seed, same text,
        whatever ran before, and the shared system prompt is prefilled once instead of every call."""
        wanted = tuple(tokens[:head])
        if self._head == wanted and self._llama.n_tokens >= head:
            self._llama.n_tokens = head  # generate() drops the KV beyond it
            return
        self._llama.reset()
        self._head = None
        if head:
            self._llama.eval(list(wanted))
        self._head = wanted

    def _grammar(self, params: DecodeParams):
        from llama_cpp import LlamaGrammar

        if params.constraint is not None:
            return LlamaGrammar.from_string(params.constraint.form("gbnf", "the llama_cpp backend"), verbose=False)
        if params.json_schema is not None:
            return LlamaGrammar.from_json_schema(json.dumps(params.json_schema), verbose=False)
        return None

    def chat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]:
        grammar = self._grammar(params)  # a constraint without a grammar, or a bad one, fails before decoding
        n_decodes = params.n if params.temperature > 0 else 1
        out = []
        for conversation in conversations:
            samples = [self._one(conversation, params, params.seed + i, grammar) for i in range(n_decodes)]
            out.append(samples * params.n if n_decodes == 1 else samples)
        return out

    def _one(self, conversation: Conversation, params: DecodeParams, seed: int, grammar) -> Completion:
        started = time.perf_counter()
        tokens, head, formatted = self.prompt_tokens(conversation)
        with self._lock:
            self._prefill_head(tokens, head)
            # Every sampler setting that shapes the output is explicit: llama-cpp-python's defaults
            # (top_k=40, min_p=0.05) would silently change the decode the caller recorded.
            response = self._llama.create_completion(
                prompt=tokens,
                stop=formatted.stop,
                stopping_criteria=formatted.stopping_criteria,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                max_tokens=params.max_new_tokens,
                seed=seed,
                grammar=grammar,
            )
        latency = time.perf_counter() - started
        (choice,) = response["choices"]
        text, think_extra = split_think_block(choice["text"])
        usage = response["usage"]
        return Completion(
            text=text,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason="length" if choice["finish_reason"] == "length" else "stop",
            latency_s=latency,
            extra={"seed": seed, "constrained": grammar is not None, "cached_prompt_tokens": head, **think_extra},
        )
