"""What SFT, DPO and GRPO share: the peft `LoraConfig` of our policy, TRL's common arguments (device,
precision, schedule, clipping, seeds) and the numbers every run reports.

`spec` is a `resources.training.spec.LoraTrainingSpec` (the stage configs in qc_assets nest one);
resources import nothing from qc_assets.
"""

from __future__ import annotations

from pathlib import Path

from resources.store import atomic_write_jsonl
from resources.training.lora_policy import is_vision_param, lora_target_modules

DTYPES = ("float32", "bfloat16", "float16")


def check_device_dtype(device: str, dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"student dtype must be one of {DTYPES}, got {dtype!r}")
    if not device or not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ValueError(f"student device must be cpu, cuda[:n] or mps, got {device!r}")
    if device == "cpu" and dtype == "float16":
        raise ValueError("float16 training is not supported on cpu; use float32 or bfloat16")


def lora_config(model, spec):
    """(peft LoraConfig, target module names): adapters on the last K language blocks only."""
    from peft import LoraConfig

    targets = lora_target_modules([n for n, _ in model.named_modules()], spec.last_k, spec.projections)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return config, targets


def common_args(spec, output_dir: str | Path, device: str, dtype: str) -> dict:
    """TRL/transformers TrainingArguments shared by every trainer: warmup + cosine schedule, clipping,
    mixed precision from the dtype, the device, seeds, no checkpoints (the caller saves what it keeps)."""
    check_device_dtype(device, dtype)
    return dict(
        output_dir=str(output_dir),
        max_steps=spec.max_steps,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=spec.warmup_ratio,  # < 1 = a ratio of max_steps
        max_grad_norm=spec.max_grad_norm,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        use_cpu=device == "cpu",
        seed=spec.seed,
        data_seed=spec.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        activation_checkpointing=spec.activation_checkpointing,
    )


def check_frozen(peft_model) -> None:
    """ValueError if anything but LoRA weights would train, or any vision parameter would."""
    leaked = [
        n
        for n, p in peft_model.named_parameters()
        if p.requires_grad and ("lora_" not in n or is_vision_param(n.removeprefix("base_model.model.")))
    ]
    if leaked:
        raise ValueError(f"parameters outside the language model's LoRA adapters would train: {leaked[:5]}")


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def losses_from(log_history: list[dict], key: str = "loss") -> list[float]:
    return [float(h[key]) for h in log_history if key in h and "train_runtime" not in h]


def write_train_log(log_history: list[dict], path: Path) -> Path:
    return atomic_write_jsonl(path, [h for h in log_history if "train_runtime" not in h])


def adapter_size_bytes(adapter_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(adapter_dir).rglob("*") if p.is_file())
