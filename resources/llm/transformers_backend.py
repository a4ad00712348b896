"""transformers chat backend: a HF model folder or a GGUF file, batched with left padding, seeded.

Models load once per process (module-level cache keyed by path, GGUF file, device and dtype) because
loading, and GGUF dequantisation in particular, takes tens of seconds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from resources.llm import Completion, Conversation, DecodeParams
from resources.llm.thinking import chat_template_kwargs, split_think_block
from resources.llm.transformers_constrained import LineConstraint, PrefixChooser

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CACHE: dict[tuple[str, str | None, str, str], tuple[object, object]] = {}
_CACHE_LOCK = threading.Lock()


def load_model(model_path: str | Path, gguf_file: str | None, device: str, dtype: str):
    """(model, tokenizer), loaded once per process for a given (path, gguf_file, device, dtype)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    path = Path(model_path).expanduser().resolve()
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise ValueError(f"gguf_file {gguf_file!r} not found in folder {path}")
    if gguf_file is None and not (path / "config.json").is_file():
        raise ValueError(f"model_path {path} is not a HF model folder (no config.json) and no gguf_file given")
    key = (str(path), gguf_file, device, dtype)
    with _CACHE_LOCK:
        if key not in _CACHE:
            kwargs = {"gguf_file": gguf_file} if gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            tokenizer.padding_side = "left"
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype], **kwargs)
            model.to(device).eval()
            _CACHE[key] = (model, tokenizer)
        return _CACHE[key]


def model_fingerprint(model_path: str | Path, gguf_file: str | None, dtype: str) -> str:
    """Stable short id of the weights: file name(s) + byte size + dtype (no full-file hashing)."""
    path = Path(model_path).expanduser().resolve()
    if gguf_file:
        name, size = gguf_file, (path / gguf_file).stat().st_size
    else:
        weights = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt"})
        name, size = path.name, sum(p.stat().st_size for p in weights)
    digest = hashlib.sha256(f"{name}|{size}|{dtype}".encode()).hexdigest()[:12]
    return f"transformers:{Path(name).stem}:{digest}"


def _eos_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    for value in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    if not ids:
        raise ValueError("the model defines no eos_token_id; cannot tell a stop from a length cut")
    return sorted(ids)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Temporarily cap intra-op threads: on an oversubscribed CPU, spinning OpenMP workers make a
    small model's decode many times slower than one thread."""
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TransformersChatLLM:
    """`ChatLLM` over a local causal LM. Sample i of a conversation uses seed `params.seed + i`."""

    def __init__(
        self,
        model_path: str | Path,
        gguf_file: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        num_threads: int = 0,
        thinking: str = "off",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = torch default), got {num_threads}")
        self.model_path = Path(model_path)
        self.gguf_file = gguf_file
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.num_threads = num_threads
        # Templates that know `enable_thinking` (Qwen3) honour it; others ignore the extra variable.
        self.template_kwargs = chat_template_kwargs(thinking) or {}
        self.model, self.tokenizer = load_model(model_path, gguf_file, device, dtype)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self._fingerprint = model_fingerprint(model_path, gguf_file, dtype)
        self._line_constraints: dict[str | None, LineConstraint] = {}

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            list(conversation), add_generation_prompt=True, tokenize=False, **self.template_kwargs
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]:
        if params.json_schema is not None:
            # This backend constrains through forced prefixes only; ignoring a schema would be a
            # silent fallback to unconstrained output.
            raise ValueError(
                "params.json_schema is set (e.g. Stage-B reflection_json_schema=True) but the "
                "transformers backend cannot decode under a JSON schema; use the openai backend "
                "(llama.cpp server, vLLM, SGLang) or turn the flag off"
            )
        if params.constraint is not None:
            params.constraint.form("prefixes", "the transformers backend")  # fails before any decoding
        with _torch_threads(self.num_threads):
            return self._chat(conversations, params)

    def _chat(self, conversations: Sequence[Conversation], params: DecodeParams) -> list[list[Completion]]:
        prompts = [self.prompt_ids(c) for c in conversations]
        # Greedy samples are identical, so one decode serves all n.
        n_decodes = params.n if params.temperature > 0 else 1
        per_sample: list[list[Completion]] = []
        for i in range(n_decodes):
            sample: list[Completion] = []
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                sample.extend(self._decode_batch(chunk, params, params.seed + i))
            per_sample.append(sample)
        out = []
        for j in range(len(prompts)):
            column = [per_sample[i][j] for i in range(n_decodes)]
            out.append(column * params.n if n_decodes == 1 else column)
        return out

    # -- decoding ---------------------------------------------------------------------------------

    def left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[k, width - len(row) :] = 1
        return ids.to(self.model.device), mask.to(self.model.device)

    def _generation_config(self, params: DecodeParams, max_new_tokens: int) -> GenerationConfig:
        # Every field that shapes the output is set here so that defaults baked into a checkpoint
        # (top_k=50, repetition penalties) cannot silently change the decode the caller recorded.
        fixed = dict(
            max_new_tokens=max_new_tokens,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        if params.temperature > 0:
            return GenerationConfig(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0, **fixed
            )
        return GenerationConfig(do_sample=False, **fixed)

    def _decode_batch(self, prompts: list[list[int]], params: DecodeParams, seed: int) -> list[Completion]:
        started = time.perf_counter()
        constraint = params.constraint
        constrained = constraint is not None
        prefixes: list[list[int]] = [[] for _ in prompts]
        budget = params.max_new_tokens
        if constrained:
            allowed = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in constraint.prefixes]
            prefixes = PrefixChooser(self, allowed).choose(prompts, params.temperature, seed)
            # The forced prefix counts against the caller's token budget, as it would on a server.
            budget = max(1, params.max_new_tokens - max(len(x) for x in prefixes))
        ids, mask = self.left_pad([p + x for p, x in zip(prompts, prefixes, strict=True)])
        processors = stopping = None
        stop_ids = set(self.eos_ids)
        if constrained:
            line = self._line_constraint(constraint.line_start)
            processors, stopping = line.processors(start_len=ids.shape[1])
            stop_ids |= line.newline_ids
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=self._generation_config(params, budget),
                logits_processor=processors,
                stopping_criteria=stopping,
            )
        latency = time.perf_counter() - started
        results = []
        for k, prompt in enumerate(prompts):
            generated = out[k, ids.shape[1] :].tolist()
            cut = next((t for t, tok in enumerate(generated) if tok in stop_ids), None)
            kept = generated if cut is None else generated[: cut + 1]
            text = self.tokenizer.decode(
                prefixes[k] + [t for t in kept if t not in self.eos_ids], skip_special_tokens=True
            )
            think_extra: dict = {}
            if constrained:
                # The newline that ended the line (possibly fused with punctuation) is not part of it.
                prefix_lines = self.tokenizer.decode(prefixes[k], skip_special_tokens=True).count("\n")
                text = "\n".join(text.split("\n")[: prefix_lines + 1])
            else:
                text, think_extra = split_think_block(text)
            results.append(
                Completion(
                    text=text,
                    prompt_tokens=len(prompt),
                    completion_tokens=len(prefixes[k]) + len(kept),
                    finish_reason="length" if cut is None else "stop",
                    latency_s=latency,
                    extra={"seed": seed, "batch_size": len(prompts), "constrained": constrained, **think_extra},
                )
            )
        return results

    def _line_constraint(self, line_start: str | None) -> LineConstraint:
        if line_start not in self._line_constraints:
            self._line_constraints[line_start] = LineConstraint.for_tokenizer(self.tokenizer, line_start)
        return self._line_constraints[line_start]
