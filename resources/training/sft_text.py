"""LoRA SFT of a text student (FastDistill's SmolLM2 by default) through TRL's `SFTTrainer`.

Rows go to TRL as conversational prompt-completion pairs, so the loss covers the assistant reply
only (`completion_mask`). Warmup + cosine schedule, gradient clipping, bf16 mixed precision when the
dtype says so, on the configured device (`trl_common`); the settings are a `LoraTrainingSpec`. The
base comes from the process-wide transformers cache and is deep-copied before LoRA layers are injected,
so the shared teacher/base model is never modified. The merged student is saved as a plain HF folder
so a later run can load it as its teacher (Born-Again) through the ordinary transformers backend.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path

from resources.llm.transformers_backend import load_model
from resources.training.lora_policy import lora_target_modules
from resources.training.spec import LoraTrainingSpec
from resources.training.trl_common import common_args, losses_from, write_train_log


def _drop_gguf_tag(model) -> None:
    """GGUF weights are dequantized to float at load, yet transformers keeps a "quantized with gguf"
    tag and refuses to train or save; the tensors are plain, so the tag goes."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = getattr(quantizer.quantization_config.quant_method, "value", quantizer.quantization_config.quant_method)
    if method != "gguf":
        raise ValueError(f"cannot train a student on a {method}-quantized base; use a float base model")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def build_trainer(
    base_path: Path,
    gguf_file: str | None,
    conversations: Sequence[Sequence[dict]],
    spec: LoraTrainingSpec,
    out_dir: Path,
    device: str,
    dtype: str,
):
    """(trainer, tokenizer): SFTTrainer over a private copy of the cached base with LoRA on `spec.projections`
    of the last `spec.last_k` blocks (0 = every block); rows are cut at `spec.max_length` tokens."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    if not conversations:
        raise ValueError("no SFT conversations to train on; the export kept no samples")
    base, tokenizer = load_model(base_path, gguf_file, device, dtype)
    model = copy.deepcopy(base)
    _drop_gguf_tag(model)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "right"
    rows = [{"prompt": list(c[:-1]), "completion": [c[-1]]} for c in conversations]
    targets = lora_target_modules([n for n, _ in model.named_modules()], spec.last_k, spec.projections)
    args = SFTConfig(
        **common_args(spec, Path(out_dir), device, dtype),
        max_length=spec.max_length,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    torch.manual_seed(spec.seed)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, task_type="CAUSAL_LM", target_modules=targets
        ),
    )
    return trainer, tokenizer


def train_lora(
    base_path: Path,
    gguf_file: str | None,
    conversations: Sequence[Sequence[dict]],
    spec: LoraTrainingSpec,
    out_dir: Path,
    device: str = "cpu",
    dtype: str = "float32",
    cpu_threads: int = 0,
) -> dict:
    """Train LoRA adapters for `spec.max_steps` steps; save adapter and merged model; return a report."""
    import torch

    out_dir = Path(out_dir)
    threads_before = torch.get_num_threads()
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    try:
        trainer, tokenizer = build_trainer(base_path, gguf_file, conversations, spec, out_dir, device, dtype)
        model = trainer.model
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        frozen_probe = {n: p.detach().clone() for n, p in list(model.named_parameters())[:4] if not p.requires_grad}
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads_before)
    history = trainer.state.log_history
    write_train_log(history, out_dir / "train_log.jsonl")
    tokens = int(max((h.get("num_tokens", 0) for h in history), default=0))
    changed = sum(not torch.equal(trainable[n], p.detach()) for n, p in model.named_parameters() if n in trainable)
    frozen_changed = sum(
        not torch.equal(frozen_probe[n], p.detach()) for n, p in model.named_parameters() if n in frozen_probe
    )
    model.save_pretrained(out_dir / "adapter")
    merged = model.merge_and_unload()
    merged.eval()
    # bfloat16 on disk halves the write; the transformers backend loads it back in the configured dtype.
    merged.to(torch.bfloat16).save_pretrained(out_dir / "model")
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out_dir / "model")
    return {
        "steps": spec.max_steps,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "lora_r": spec.r,
        "max_length": spec.max_length,
        "device": device,
        "dtype": dtype,
        "examples": len(conversations),
        "losses": losses_from(history),
        "learning_rates": losses_from(history, "learning_rate"),
        "train_tokens": tokens,
        "train_wall_s": wall,
        "train_tokens_per_sec": tokens / wall if wall > 0 else None,
        "trainable_tensors": len(trainable),
        "trainable_tensors_changed": changed,
        "frozen_tensors_changed": frozen_changed,
        "model_dir": str(out_dir / "model"),
    }
