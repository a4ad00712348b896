"""SFT of the Qwen3-VL student through TRL's `SFTTrainer` with a peft `LoraConfig`.

Rows go to TRL in its conversational prompt-completion format with an `images` column, so TRL's
vision-language collator renders the chat template, expands image tokens through the processor and
puts loss on the completion only (the assistant reply, its `<|im_end|>` and the template's newline).
Text-only rows (Stage-B verdicts) and photo rows (Stage-A summaries) mix in one batch. Policy:
adapters on the last K language blocks; vision tower, merger, embeddings and head frozen.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resources.training.trl_common import (
    check_device_dtype,
    check_frozen,
    common_args,
    lora_config,
    losses_from,
    trainable_parameters,
    write_train_log,
)

# Files of a base checkpoint that are weights (replaced by the merged ones) or not part of a checkpoint.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def load_student(model_path: str, device: str = "cpu", dtype: str = "float32"):
    """A fresh (uncached) model + processor: training mutates the model, so it must not be shared."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

    check_device_dtype(device, dtype)
    if not (Path(model_path) / "config.json").is_file():
        raise ValueError(f"no student checkpoint at {model_path!r}: expected a folder with config.json")
    processor = ImageOnlyQwen3VLProcessor.from_pretrained(model_path)
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_path, dtype=getattr(torch, dtype))
    return model.to(device), processor


def _blocks(message: dict) -> dict:
    """Structured content for every message: Arrow cannot hold a column mixing strings and lists."""
    content = message["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    return {"role": message["role"], "content": [{"type": b["type"], "text": b.get("text")} for b in content]}


def trl_row(example: dict) -> dict:
    """One fusion example -> TRL's conversational prompt-completion row with its photos loaded."""
    from PIL import Image

    images = []
    for path in example.get("images") or []:
        with Image.open(path) as img:
            images.append(img.convert("RGB"))
    messages = example["messages"]
    return {"prompt": [_blocks(m) for m in messages[:-1]], "completion": [_blocks(messages[-1])], "images": images}


def token_length(row: dict, processor) -> int:
    """Tokens of prompt + completion with image tokens expanded (what the collator will build)."""
    text = processor.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    enc = processor(text=[text], images=row["images"] or None, return_tensors="pt")
    return int(enc["input_ids"].shape[1])


@dataclass
class TrainResult:
    losses: list[float]
    steps: int
    trainable_params: int
    total_params: int
    dropped_too_long: int
    seconds: float
    log_history: list[dict]


def train_sft(
    model,
    processor,
    examples: Sequence[dict],
    spec,
    output_dir: Path,
    device: str,
    dtype: str,
    log: Callable[[str], None] = print,
):
    """(peft model, TrainResult): SFTTrainer over `examples` for spec.max_steps optimizer steps.

    Rows longer than spec.max_length tokens are dropped and counted (truncating would cut the reply
    or image tokens)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [trl_row(x) for x in examples]
    kept = [r for r in rows if token_length(r, processor) <= spec.max_length]
    if not kept:
        raise ValueError(f"all {len(rows)} rows are longer than max_length={spec.max_length} tokens")
    peft_config, targets = lora_config(model, spec)
    # The `images` column (empty lists for text rows) keeps every batch on TRL's vision-language collator.
    args = SFTConfig(**common_args(spec, output_dir, device, dtype), max_length=None, completion_only_loss=True)
    torch.manual_seed(spec.seed)  # LoRA init happens inside the trainer
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(kept),
        processing_class=processor,
        peft_config=peft_config,
    )
    check_frozen(trainer.model)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peft_model = trainer.model
    peft_model.eval()
    history = trainer.state.log_history
    write_train_log(history, Path(output_dir) / "train_log.jsonl")
    losses = losses_from(history)
    log(f"sft: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, targets {len(targets)} modules")
    trainable, total = trainable_parameters(peft_model)
    return peft_model, TrainResult(
        losses=losses,
        steps=spec.max_steps,
        trainable_params=trainable,
        total_params=total,
        dropped_too_long=len(rows) - len(kept),
        seconds=seconds,
        log_history=history,
    )


def end_token_id(processor) -> int:
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    if end is None or end == tok.unk_token_id:
        end = tok.eos_token_id
    if end is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token: cannot find the reply's end")
    return int(end)


class StudentGenerator:
    """Greedy, left-padded batched generation over chat conversations with 0..n photos each.
    `adapter=False` runs a peft model with its LoRA disabled, so base and trained are compared on the
    same weights without loading the model twice; a plain (merged) model takes `adapter=True`."""

    def __init__(self, model, processor, adapter: bool, batch_size: int = 4):
        self.model, self.processor, self.adapter, self.batch_size = model, processor, adapter, batch_size

    def generate(
        self, conversations: Sequence[list[dict]], images: Sequence[list[str]], max_new_tokens: int
    ) -> list[str]:
        from contextlib import nullcontext

        import torch
        from PIL import Image

        tok = self.processor.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"
        device = next(self.model.parameters()).device
        ctx = nullcontext() if self.adapter else self.model.disable_adapter()
        texts_out: list[str] = []
        try:
            with ctx, torch.inference_mode():
                for i in range(0, len(conversations), self.batch_size):
                    convs, imgs = conversations[i : i + self.batch_size], images[i : i + self.batch_size]
                    prompts = [
                        self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs
                    ]
                    pil = []
                    for paths in imgs:
                        for p in paths:
                            with Image.open(p) as img:
                                pil.append(img.convert("RGB"))
                    enc = (
                        self.processor(text=prompts, images=pil, padding=True, return_tensors="pt")
                        if pil
                        else tok(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
                    )
                    enc = enc.to(device)
                    out = self.model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=end_token_id(self.processor),
                    )
                    width = enc["input_ids"].shape[1]
                    texts_out += [tok.decode(row[width:], skip_special_tokens=True) for row in out]
        finally:
            tok.padding_side = side
        return texts_out


def save_merged(peft_model, base_path: str, out_dir: Path) -> Path:
    """Merge the adapter into the weights and write a complete checkpoint into `out_dir`.

    The base folder's non-weight files (processor and video-processor configs, tokenizer, chat
    template) are copied first, so `vllm serve` and `AutoProcessor` find what they expect; then the
    merged model's config.json, generation_config.json and safetensors are written over them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in Path(base_path).iterdir():
        if item.is_file() and not item.name.endswith(_WEIGHT_SUFFIXES) and item.name != "model.safetensors.index.json":
            shutil.copy2(item, out_dir / item.name)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(out_dir))
    return out_dir


def load_adapter(base_path: str, adapter_dir: Path, merge: bool = False, dtype: str = "float32"):
    """Load base + saved adapter (and optionally merge it): the published adapter's round trip."""
    import torch
    from peft import PeftModel
    from transformers import Qwen3VLForConditionalGeneration

    base = Qwen3VLForConditionalGeneration.from_pretrained(base_path, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    return model.merge_and_unload() if merge else model
