"""DPO of the one student over every mission (TRL DPOTrainer on the exported preference pairs): train
on the pairs of each mission's train groups, evaluate on its held-out groups afterwards (`runs.py`
has what DPO and GRPO share)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qc_assets.student.preference_config import DPORunConfig
from qc_assets.student.runs import finish_run, inputs_key, mission_plan, missions_on_disk, reuse_or_train
from resources.store import read_jsonl

DISTILL_ASSET = "distill_chatml"
PAIRS_FILE = "preference_pairs.jsonl"


def load_pairs(data_root: Path, plan: dict) -> tuple[list[dict], dict[str, int]]:
    """Every mission's exported preference pairs, minus the groups held out for its eval."""
    pairs, dropped = [], {}
    for name, p in plan.items():
        for row in read_jsonl(Path(data_root) / DISTILL_ASSET / name / PAIRS_FILE):
            if row.get("group_id") in p["held_groups"]:
                dropped[name] = dropped.get(name, 0) + 1
                continue
            pairs.append(row)
    return pairs, dropped


def run_dpo(
    cfg: DPORunConfig,
    student,
    *,
    data_root: Path,
    images_root: Path,
    out_root: Path,
    missions: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    data_root = Path(data_root)
    plan = mission_plan(data_root, missions_on_disk(data_root, missions), cfg.seed, cfg.guidance)
    pairs, dropped = load_pairs(data_root, plan)
    if not pairs:
        raise ValueError(
            f"no preference pairs under {data_root / DISTILL_ASSET}/<mission>/{PAIRS_FILE} "
            "(after dropping held-out groups): materialize distill_chatml with preference_pairs on"
        )
    key = inputs_key("dpo", cfg, student, plan, pairs)

    def train(run_id: str, staging: Path) -> dict:
        session = student.dpo(pairs, cfg.lora, cfg.beta, staging, log=log)
        return finish_run(
            session,
            plan,
            cfg,
            images_root,
            staging,
            run_id,
            {"method": "dpo", "train_pairs": len(pairs), "dropped_held_out": dropped},
        )

    return reuse_or_train(out_root, key, train, log)
