"""GRPO of the one student over every mission (TRL GRPOTrainer with the verdict rewards): train on
each mission's train split, evaluate on its held-out groups afterwards (`runs.py` has what DPO and
GRPO share: split, evaluation, reuse of a run with the same inputs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qc_assets.student.grpo_dataset import build_grpo_dataset
from qc_assets.student.preference_config import GRPORunConfig
from qc_assets.student.rewards import default_reward_funcs
from qc_assets.student.runs import finish_run, inputs_key, mission_plan, missions_on_disk, reuse_or_train


def reward_funcs_for(cfg: GRPORunConfig) -> list:
    """The verdict rewards at the run config's weights (seed 003: label 1.0, format 0.2)."""
    return default_reward_funcs(cfg.label_weight, cfg.format_weight)


def run_grpo(
    cfg: GRPORunConfig,
    student,
    *,
    data_root: Path,
    images_root: Path,
    out_root: Path,
    missions: list[str] | None = None,
    reward_funcs: list | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    data_root = Path(data_root)
    plan = mission_plan(data_root, missions_on_disk(data_root, missions), cfg.seed, cfg.guidance)
    rows = [row for p in plan.values() for row in build_grpo_dataset(p["train"], p["mission"], p["guidance"])]
    if not rows:
        raise ValueError("no training records left after holding out each mission's eval groups")
    held = {r["record_id"] for p in plan.values() for r in p["held"]}
    leaked = held & {r["record_id"] for r in rows}
    if leaked:  # the split is by group, so this would be a bug in the plan, never a data problem
        raise RuntimeError(f"held-out records reached GRPO training: {sorted(leaked)[:5]}")
    funcs = reward_funcs or reward_funcs_for(cfg)
    key = inputs_key("grpo", cfg, student, plan, rows, extra=[getattr(f, "__name__", repr(f)) for f in funcs])

    def train(run_id: str, staging: Path) -> dict:
        session = student.grpo(rows, cfg.lora, cfg.rollout(), funcs, staging, log=log)
        return finish_run(
            session,
            plan,
            cfg,
            images_root,
            staging,
            run_id,
            {"method": "grpo", "train_rows": len(rows), "held_out_rows": len(held)},
        )

    return reuse_or_train(out_root, key, train, log)
