"""Preference and RL training of the Qwen3-VL student through TRL: `DPOTrainer` on exported
preference pairs and `GRPOTrainer` with reward functions, both with the same peft LoRA policy,
schedule, clipping, precision and seeds as SFT (`trl_common`). Text-only prompts, so the tokenizer
is the processing class for DPO; GRPO takes the processor (TRL renders the conversational prompts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from resources.training.session import StudentSession
from resources.training.spec import LoraTrainingSpec
from resources.training.trl_common import (
    check_frozen,
    common_args,
    lora_config,
    losses_from,
    trainable_parameters,
    write_train_log,
)


def _session(
    trainer, processor, base_path: str, targets: list[str], seconds: float, output_dir: Path, loss_key: str = "loss"
) -> StudentSession:
    history = trainer.state.log_history
    write_train_log(history, Path(output_dir) / "train_log.jsonl")
    model = trainer.model
    model.eval()
    trainable, total = trainable_parameters(model)
    return StudentSession(
        model,
        processor,
        base_path,
        targets,
        losses_from(history, loss_key),
        trainable,
        total,
        seconds,
        extra={"log_history": [h for h in history if "train_runtime" not in h]},
    )


def train_dpo(
    model,
    processor,
    base_path: str,
    pairs: Sequence[dict],
    spec: LoraTrainingSpec,
    beta: float,
    output_dir: Path,
    device: str,
    dtype: str,
    log: Callable[[str], None] = print,
) -> StudentSession:
    """`pairs`: TRL's conversational preference rows `{prompt, chosen, rejected}` (message lists)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("DPO needs at least one preference pair; distill_chatml exported none")
    if not beta > 0:
        raise ValueError(f"DPO beta must be > 0, got {beta}")
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    peft_config, targets = lora_config(model, spec)
    args = DPOConfig(**common_args(spec, output_dir, device, dtype), beta=beta, max_length=spec.max_length)
    torch.manual_seed(spec.seed)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor.tokenizer,
        peft_config=peft_config,
    )
    check_frozen(trainer.model)
    start = time.perf_counter()
    trainer.train()
    session = _session(trainer, processor, base_path, targets, time.perf_counter() - start, output_dir)
    log(f"dpo: {len(session.losses)} steps, loss {session.losses[0]:.4f} -> {session.losses[-1]:.4f}")
    return session


def train_grpo(
    model,
    processor,
    base_path: str,
    rows: Sequence[dict],
    spec: LoraTrainingSpec,
    rollout: dict,
    reward_funcs: list,
    output_dir: Path,
    device: str,
    dtype: str,
    log: Callable[[str], None] = print,
) -> StudentSession:
    """`rows`: `{prompt: [system, user], label, ...}`; extra columns reach the reward functions. `rollout`:
    GRPOConfig's num_generations, max_completion_length, beta and temperature."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if not rows:
        raise ValueError("GRPO needs at least one prompt row")
    peft_config, targets = lora_config(model, spec)
    unknown = sorted(set(rollout) - {"num_generations", "max_completion_length", "beta", "temperature"})
    if unknown:
        raise ValueError(f"unknown GRPO rollout settings {unknown}")
    args = GRPOConfig(**common_args(spec, output_dir, device, dtype), **rollout)
    torch.manual_seed(spec.seed)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs),
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=processor,
        peft_config=peft_config,
    )
    check_frozen(trainer.model)
    start = time.perf_counter()
    trainer.train()
    session = _session(trainer, processor, base_path, targets, time.perf_counter() - start, output_dir)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    log(f"grpo: {len(rewards)} steps, mean reward {rewards[0]:.3f} -> {rewards[-1]:.3f}" if rewards else "grpo: done")
    return session
