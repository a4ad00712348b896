"""LoRA SFT of the student (torch + peft). A model backend, imported only inside the student asset.

The base weights come from the process-wide transformers cache and are deep-copied before LoRA
layers are injected, so the shared teacher/base model is never modified. Only assistant tokens
carry loss. The merged student is saved as a plain HF folder so a later run can load it as its
teacher (Born-Again) through the ordinary transformers backend.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from qc_assets.fastdistill.config import StudentConfig
from resources.llm.transformers_backend import load_model

IGNORE = -100


def encode_chat(tokenizer, messages: Sequence[dict], max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels masked to the assistant reply."""
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("chat template renders the prompt differently with and without the reply")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [IGNORE] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids):]
    return full_ids, labels


def _batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, (row_ids, row_labels) in enumerate(rows):
        ids[k, : len(row_ids)] = torch.tensor(row_ids)
        labels[k, : len(row_labels)] = torch.tensor(row_labels)
        mask[k, : len(row_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _drop_gguf_tag(model) -> None:
    """GGUF weights are dequantized to float32 at load, yet transformers keeps a "quantized with
    gguf" tag and refuses to save; the tensors are plain, so the tag goes."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = getattr(quantizer.quantization_config.quant_method, "value", quantizer.quantization_config.quant_method)
    if method != "gguf":
        raise ValueError(f"cannot save a student merged into a {method}-quantized base; use a float base model")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def train_lora(
    base_path: Path, gguf_file: str | None, conversations: Sequence[Sequence[dict]], cfg: StudentConfig, out_dir: Path
) -> dict:
    """Train LoRA adapters for `cfg.steps` steps; save adapter and merged model; return a report."""
    if not conversations:
        raise ValueError("no SFT conversations to train on; the export kept no samples")
    base, tokenizer = load_model(base_path, gguf_file, "cpu", "float32")
    torch.manual_seed(cfg.seed)
    model = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    model.train()
    encoded = [encode_chat(tokenizer, conv, cfg.max_length) for conv in conversations]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen_probe = {n: p.detach().clone() for n, p in list(model.named_parameters())[:4] if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    rng = random.Random(cfg.seed)
    losses, tokens, started = [], 0, time.perf_counter()
    threads_before = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        for _ in range(cfg.steps):
            batch = _batch([encoded[rng.randrange(len(encoded))] for _ in range(cfg.batch_size)], pad_id)
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            tokens += int(batch["attention_mask"].sum())
    finally:
        torch.set_num_threads(threads_before)
    wall = time.perf_counter() - started
    changed = sum(not torch.equal(trainable[n], p.detach()) for n, p in model.named_parameters() if n in trainable)
    frozen_changed = sum(not torch.equal(frozen_probe[n], p.detach()) for n, p in model.named_parameters()
                         if n in frozen_probe)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir / "adapter")
    merged = model.merge_and_unload()
    merged.eval()
    _drop_gguf_tag(merged)
    # bfloat16 on disk halves the write; the transformers backend loads it back as float32.
    merged.to(torch.bfloat16).save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    return {
        "steps": cfg.steps, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "lora_r": cfg.lora_r,
        "examples": len(encoded), "losses": losses, "train_tokens": tokens, "train_wall_s": wall,
        "train_tokens_per_sec": tokens / wall if wall > 0 else None,
        "trainable_tensors": len(trainable), "trainable_tensors_changed": changed,
        "frozen_tensors_changed": frozen_changed, "model_dir": str(out_dir / "model"),
    }
