"""LoRA SFT of the Qwen3-VL student: the one module of this stage that touches torch and transformers.

Policy: adapters on the attention/MLP projections of the language model's last K blocks only, named
explicitly from the model's layer list; everything else (vision tower, merger, embeddings, head)
frozen. Loss only on the assistant reply and its end token. A plain seeded AdamW loop; each step's
loss is logged to a JSONL training log. Text-only rows go through the tokenizer, image rows through
the processor (which expands the image placeholder into vision tokens).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from qc_assets.fusion.config import LoraSFTConfig
from qc_assets.fusion.policy import IGNORE_INDEX, assistant_labels, is_vision_param, lora_target_modules
from resources.store import append_jsonl


def load_student(model_path: str, device: str = "cpu", dtype: str = "float32"):
    """A fresh (uncached) model + processor: training mutates the model, so it must not be shared."""
    from transformers import Qwen3VLForConditionalGeneration

    from resources.vlm.qwen3vl_processor import ImageOnlyQwen3VLProcessor

    processor = ImageOnlyQwen3VLProcessor.from_pretrained(model_path)
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_path, dtype=getattr(torch, dtype))
    return model.to(device), processor


def end_token_id(processor) -> int:
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    if end is None or end == tok.unk_token_id:
        end = tok.eos_token_id
    if end is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token: cannot find the reply's end")
    return int(end)


def encode_example(example: dict, processor, max_length: int | None = None) -> dict | None:
    """input_ids/labels (+ pixel_values, image_grid_thw) for one chatml row; None if longer than max_length."""
    from PIL import Image

    messages, images = example["messages"], example.get("images") or []
    prompt_text = processor.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full_text = processor.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the conversation differently from its prompt + reply; "
                         "cannot locate the assistant span")
    tok = processor.tokenizer
    out: dict = {}
    if images:
        pil = []
        for path in images:
            with Image.open(path) as img:
                pil.append(img.convert("RGB"))
        enc = processor(text=[prompt_text], images=pil, return_tensors="pt")
        prompt_ids = enc["input_ids"][0].tolist()
        # Which tokens are image tokens: Qwen3-VL's multimodal RoPE needs it beside image_grid_thw.
        mm_types = enc["mm_token_type_ids"][0].tolist()
        out["pixel_values"] = enc["pixel_values"]
        out["image_grid_thw"] = enc["image_grid_thw"]
    else:
        prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
        mm_types = [0] * len(prompt_ids)
    completion_ids = tok(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    labels = assistant_labels(len(prompt_ids), completion_ids, end_token_id(processor))
    input_ids = prompt_ids + completion_ids
    if max_length is not None and len(input_ids) > max_length:
        return None
    out.update(input_ids=input_ids, labels=labels, mm_token_type_ids=mm_types + [0] * len(completion_ids))
    return out


def collate(encoded: Sequence[dict], pad_id: int) -> dict:
    """Right-pad a micro-batch; images of the rows that have them are concatenated in row order."""
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    mm_types = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        mm_types[i, :n] = torch.tensor(e["mm_token_type_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask, "mm_token_type_ids": mm_types}
    with_images = [e for e in encoded if "pixel_values" in e]
    if with_images:
        batch["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images])
        batch["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in with_images])
    return batch


def apply_lora(model, cfg: LoraSFTConfig):
    """Wrap with peft: adapters on the last-K blocks' projections, every base parameter frozen."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules([n for n, _ in model.named_modules()], cfg.last_k, cfg.projections)
    torch.manual_seed(cfg.seed)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    for name, param in peft_model.named_parameters():
        if "lora_" not in name:
            param.requires_grad_(False)
    leaked = [n for n, p in peft_model.named_parameters() if p.requires_grad and is_vision_param(n)]
    if leaked:
        raise ValueError(f"vision parameters would train: {leaked[:5]}")
    return peft_model, targets


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@dataclass
class TrainResult:
    losses: list[float]
    steps: int
    trainable_params: int
    total_params: int
    dropped_too_long: int
    seconds: float


def train_lora(model, processor, examples: Sequence[dict], cfg: LoraSFTConfig, log_path: Path | None = None,
               log: Callable[[str], None] = print) -> TrainResult:
    """Train the (already peft-wrapped) model in place for cfg.max_steps optimizer steps."""
    encoded = [e for e in (encode_example(x, processor, cfg.max_length) for x in examples) if e is not None]
    dropped = len(examples) - len(encoded)
    if not encoded:
        raise ValueError(f"all {len(examples)} rows are longer than max_length={cfg.max_length} tokens")
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    pad_id = processor.tokenizer.pad_token_id
    order: list[int] = []
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        step_loss, tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            if len(order) < cfg.batch_size:
                # Epoch boundary: a fresh seeded permutation, appended so batches never run short.
                perm = list(range(len(encoded)))
                rng.shuffle(perm)
                order.extend(perm * max(1, -(-cfg.batch_size // len(perm))))
            idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
            batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id).items()}
            loss = model(**batch).loss / cfg.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            tokens += int((batch["labels"] != IGNORE_INDEX).sum())
        optimizer.step()
        losses.append(step_loss)
        if log_path is not None:
            append_jsonl(log_path, [{"step": step, "loss": step_loss, "lr": cfg.learning_rate,
                                     "target_tokens": tokens, "elapsed_s": round(time.perf_counter() - start, 3)}])
        if step == 1 or step % 10 == 0 or step == cfg.max_steps:
            log(f"lora step {step}/{cfg.max_steps} loss {step_loss:.4f}")
    model.eval()
    trainable, total = trainable_parameters(model)
    return TrainResult(losses=losses, steps=cfg.max_steps, trainable_params=trainable, total_params=total,
                       dropped_too_long=dropped, seconds=time.perf_counter() - start)


class StudentGenerator:
    """Greedy, left-padded batched generation; `adapter=False` runs the same weights with LoRA disabled,
    so base and fused are compared without loading the model twice."""

    def __init__(self, model, processor, adapter: bool, batch_size: int = 4):
        self.model, self.processor, self.adapter, self.batch_size = model, processor, adapter, batch_size

    def generate(self, conversations: Sequence[list[dict]], images: Sequence[list[str]],
                 max_new_tokens: int) -> list[str]:
        from contextlib import nullcontext

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
                    convs, imgs = conversations[i:i + self.batch_size], images[i:i + self.batch_size]
                    prompts = [self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                               for c in convs]
                    pil = []
                    for paths in imgs:
                        for p in paths:
                            with Image.open(p) as img:
                                pil.append(img.convert("RGB"))
                    enc = (self.processor(text=prompts, images=pil, padding=True, return_tensors="pt") if pil
                           else tok(prompts, padding=True, add_special_tokens=False, return_tensors="pt"))
                    enc = enc.to(device)
                    out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                              pad_token_id=tok.pad_token_id, eos_token_id=end_token_id(self.processor))
                    width = enc["input_ids"].shape[1]
                    texts_out += [tok.decode(row[width:], skip_special_tokens=True) for row in out]
        finally:
            tok.padding_side = side
        return texts_out


def adapter_size_bytes(adapter_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(adapter_dir).rglob("*") if p.is_file())


def load_adapter(base_path: str, adapter_dir: Path, merge: bool = False, dtype: str = "float32"):
    """Load base + saved adapter (and optionally merge it): the published artifact's round trip."""
    from peft import PeftModel
    from transformers import Qwen3VLForConditionalGeneration

    base = Qwen3VLForConditionalGeneration.from_pretrained(base_path, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    return model.merge_and_unload() if merge else model
