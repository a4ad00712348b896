"""Qwen3-VL through transformers: batched generation with left padding.

Right padding puts PAD tokens between a short prompt and its first generated token, and the model
continues from the wrong context (the earlier system's garbage-prefix bug), so the tokenizer is
forced to pad on the left whatever its saved config says.
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from resources.vlm import DTYPES, VisionDecode, VisionOutput, VisionPrompt

_CACHE: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def _load(model_path: str, device: str, dtype: str):
    """Load model + processor once per process; later calls reuse them."""
    key = (str(Path(model_path).resolve()), device, dtype)
    with _LOCK:
        if key not in _CACHE:
            import torch
            from transformers import Qwen3VLForConditionalGeneration

            from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

            processor = ImageOnlyQwen3VLProcessor.from_pretrained(model_path)
            processor.tokenizer.padding_side = "left"
            processor.tokenizer.truncation_side = "left"
            # device_map places the weights on the device as they load (no full copy in CPU memory first)
            model = Qwen3VLForConditionalGeneration.from_pretrained(
                model_path, dtype="auto" if dtype == "auto" else getattr(torch, dtype), device_map=device
            )
            _CACHE[key] = (model.eval(), processor)
        return _CACHE[key]


# Files besides the weights that change what the model answers: architecture, decoding defaults,
# image preprocessing (min/max pixels), chat template and tokenizer.
_FINGERPRINT_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def model_fingerprint(model_path: str, dtype: str) -> str:
    """Hash of the checkpoint's config, processor and tokenizer files and the weight files' names and
    sizes: cheap, and it changes with anything that changes a summary."""
    folder = Path(model_path)
    parts = [dtype]
    parts += [
        f"{name}:{hashlib.sha256((folder / name).read_bytes()).hexdigest()}"
        for name in _FINGERPRINT_FILES
        if (folder / name).exists()
    ]
    parts += [f"{p.name}:{p.stat().st_size}" for p in sorted(folder.glob("*.safetensors"))]
    return f"{folder.name}-{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]}"


def one_line(text: str) -> str:
    """The contract wants one line: collapse whitespace and drop control characters."""
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch in "\n\t")
    return " ".join(text.split())


def image_size_kwargs(processor, prompts: Sequence[VisionPrompt]) -> dict:
    """The processor-call override for the prompts' image budget ({} = the processor's saved size).

    One processor call takes one size, so a batch must share one budget (Stage-A's always does: it is
    the mission's).
    """
    budgets = {p.max_pixels for p in prompts}
    if len(budgets) > 1:
        raise ValueError(f"one batch must share one max_pixels, got {sorted(budgets, key=str)}")
    budget = budgets.pop()
    if budget is None:
        return {}
    shortest = processor.image_processor.size["shortest_edge"]
    if budget < shortest:
        raise ValueError(f"max_pixels {budget} is below the processor's minimum of {shortest} pixels")
    return {"size": {"shortest_edge": shortest, "longest_edge": budget}}


class TransformersVLM:
    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32", note: str = ""):
        if not (Path(model_path) / "config.json").exists():
            raise ValueError(f"no model at {model_path!r}: expected a folder with config.json")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.model_path = model_path
        self.device = device
        self.dtype = dtype
        self._note = note
        self._fingerprint = model_fingerprint(model_path, dtype)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def note(self) -> str:
        return self._note

    def generate(self, prompts: Sequence[VisionPrompt], decode: VisionDecode) -> list[VisionOutput]:
        import torch
        from PIL import Image

        if not prompts:
            return []
        model, processor = _load(self.model_path, self.device, self.dtype)
        texts, images = [], []
        for prompt in prompts:
            messages = [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]},
            ]
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            with Image.open(prompt.image_path) as img:
                images.append(img.convert("RGB"))
        inputs = processor(
            text=texts, images=images, padding=True, return_tensors="pt", **image_size_kwargs(processor, prompts)
        ).to(self.device)
        sampling = decode.temperature > 0
        gen_kwargs = {
            "max_new_tokens": decode.max_new_tokens,
            "do_sample": sampling,
            "repetition_penalty": decode.repetition_penalty,
        }
        if sampling:
            gen_kwargs.update(temperature=decode.temperature, top_p=decode.top_p)
            torch.manual_seed(decode.seed)
        with torch.inference_mode():
            out = model.generate(**inputs, **gen_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        pad_id = processor.tokenizer.pad_token_id
        eos_ids = model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
        results = []
        for row, mask in zip(out, inputs["attention_mask"], strict=True):
            new = row[prompt_len:].tolist()
            while new and new[-1] == pad_id:
                new.pop()
            finished = bool(new) and new[-1] in eos_ids
            text = processor.tokenizer.decode(new, skip_special_tokens=True)
            results.append(
                VisionOutput(
                    text=one_line(text),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(new),
                    finish_reason="stop" if finished or len(new) < decode.max_new_tokens else "length",
                )
            )
        return results
