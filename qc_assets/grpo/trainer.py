"""Optional GRPO entry point: TRL's GRPOTrainer with the same LoRA policy as fusion SFT.

Adapters on the language model's last K blocks only (named from the model's layer list), every
other parameter frozen (vision tower and merger included); rewards = label (gated on format) +
format. Imports torch/TRL inside `train_grpo`, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qc_assets.fusion.config import DEFAULT_PROJECTIONS, LoraSFTConfig
from qc_assets.grpo.rewards import default_reward_funcs


@dataclass(frozen=True)
class GRPORunConfig:
    last_k: int = field(default=2, metadata={"help": "LoRA on the language model's last K blocks"})
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    projections: tuple[str, ...] = field(default=DEFAULT_PROJECTIONS, metadata={"help": "adapted projections"})
    max_steps: int = field(default=2, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=2, metadata={"help": "prompts x generations per device batch"})
    num_generations: int = field(default=2, metadata={"help": "completions per prompt (the GRPO group)"})
    max_completion_length: int = field(default=24, metadata={"help": "tokens per completion"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; 0 = no reference model (cheaper)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    seed: int = field(default=0, metadata={"help": "seeds LoRA init, sampling and data order"})

    def __post_init__(self) -> None:
        for name in ("last_k", "r", "alpha", "max_steps", "batch_size", "max_completion_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"grpo.{name} must be an integer >= 1, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares completions), got {self.num_generations}")
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_generations "
                             f"{self.num_generations}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampled rollouts, got {self.temperature}")

    def lora(self) -> LoraSFTConfig:
        return LoraSFTConfig(last_k=self.last_k, r=self.r, alpha=self.alpha, projections=self.projections,
                             seed=self.seed)


def train_grpo(model, processing_class, rows: list[dict], cfg: GRPORunConfig, output_dir: str | Path,
               reward_funcs: list | None = None) -> dict:
    """Run GRPO on `rows` (from `build_grpo_dataset`); returns {log_history, targets, trainable_params}.

    `model` is a loaded causal LM or Qwen3-VL model (not yet peft-wrapped); `processing_class` its
    tokenizer or processor.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from resources.training.lora_sft_vl import apply_lora, trainable_parameters

    if not rows:
        raise ValueError("GRPO needs at least one prompt row")
    peft_model, targets = apply_lora(model, cfg.lora())
    args = GRPOConfig(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        learning_rate=cfg.learning_rate, beta=cfg.beta, temperature=cfg.temperature, seed=cfg.seed,
        data_seed=cfg.seed, use_cpu=not _cuda(), report_to="none", logging_steps=1, save_strategy="no",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=peft_model, reward_funcs=reward_funcs or default_reward_funcs(), args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=processing_class)
    trainer.train()
    trainable, _ = trainable_parameters(peft_model)
    return {"log_history": trainer.state.log_history, "targets": targets, "trainable_params": trainable,
            "model": peft_model}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_grpo_for_mission(data_root: str | Path, mission_name: str, model_path: str, cfg: GRPORunConfig,
                         out_dir: str | Path) -> dict:
    """Stage-A records + Stage-B best guidance (initial guidance if Stage-B has not run) -> GRPO ->
    `<out_dir>/adapter`. Returns train_grpo's summary without the model."""
    from resources.training.lora_sft_vl import load_student
    from qc_assets.grpo.dataset import build_grpo_dataset
    from qc_assets.missions import get_mission
    from qc_assets.stage_b.guidance import Guidance, load_guidance
    from resources.store import atomic_write_json, read_jsonl

    mission = get_mission(mission_name)
    records_path = Path(data_root) / "stage_a_summaries" / mission.name / "records.jsonl"
    records = read_jsonl(records_path)
    if not records:
        raise ValueError(f"no Stage-A records at {records_path}: materialize stage_a_summaries first")
    try:
        guidance = load_guidance(Path(data_root) / "stage_b_guidance" / mission.name, "best")
    except ValueError:
        guidance = Guidance.initial(mission)
    model, processor = load_student(model_path)
    result = train_grpo(model, processor, build_grpo_dataset(records, mission, guidance), cfg, out_dir)
    result.pop("model").save_pretrained(str(Path(out_dir) / "adapter"))
    summary = dict(result)
    summary.update(mission=mission.name, guidance_version=guidance.version, model_path=model_path)
    atomic_write_json(Path(out_dir) / "grpo_summary.json", summary)
    return summary


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="GRPO on one mission's Stage-A records (TRL GRPOTrainer + LoRA)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--mission", required=True)
    p.add_argument("--model-path", required=True, help="Qwen3-VL checkpoint folder")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-steps", type=int, default=GRPORunConfig.max_steps)
    p.add_argument("--last-k", type=int, default=GRPORunConfig.last_k)
    p.add_argument("--num-generations", type=int, default=GRPORunConfig.num_generations)
    p.add_argument("--batch-size", type=int, default=GRPORunConfig.batch_size)
    p.add_argument("--seed", type=int, default=GRPORunConfig.seed)
    args = p.parse_args()
    cfg = GRPORunConfig(max_steps=args.max_steps, last_k=args.last_k, num_generations=args.num_generations,
                        batch_size=args.batch_size, seed=args.seed)
    summary = run_grpo_for_mission(args.data_root, args.mission, args.model_path, cfg, args.out_dir)
    print(f"GRPO done: {len(summary['log_history'])} log rows, adapter in {args.out_dir}/adapter")


if __name__ == "__main__":
    main()
