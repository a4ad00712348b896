"""DPO and GRPO runs of the one student over every mission: train on the train side of each
mission's split only, evaluate base vs trained on the held-out side afterwards, write
`runs/<run_id>/` (adapter, merged checkpoint, eval.json, summary). These runs are reported, not
promoted: `fused_sft_checkpoint/current` is the served student. `latest.json` names the latest run
and its inputs key; a request with the same inputs returns that run instead of training again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from qc_assets.fusion.post_train import RUNS_DIR, evaluate_session, in_staging, mission_plan, new_run, publish
from qc_assets.fusion.sources import discover_missions
from qc_assets.grpo.config import DPORunConfig, GRPORunConfig
from qc_assets.grpo.dataset import build_grpo_dataset
from qc_assets.grpo.rewards import default_reward_funcs
from resources.store import atomic_write_json, inputs_hash, read_jsonl

DISTILL_ASSET = "distill_chatml"
PAIRS_FILE = "preference_pairs.jsonl"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "eval.json"
LATEST_FILE = "latest.json"


def _missions(data_root: Path, missions: list[str] | None) -> list[str]:
    found = sorted(missions) if missions is not None else discover_missions(data_root)
    if not found:
        raise ValueError(f"no mission has Stage-A records or distill rows under {data_root}: "
                         "materialize stage_a_summaries first")
    return found


def _finish(session, plan, cfg, images_root, staging: Path, run_id: str, summary: dict) -> dict:
    eval_doc = {"run_id": run_id, **evaluate_session(session, plan, cfg.eval_config(), images_root, cfg.seed)}
    adapter_bytes = session.save_adapter(staging / "adapter")
    session.save_merged(staging)
    summary = {**summary, "run_id": run_id, "config": dict(cfg.__dict__), "targets": session.targets,
               "trainable_params": session.trainable_params, "total_params": session.total_params,
               "adapter_bytes": adapter_bytes, "losses": session.losses, "train_seconds": session.seconds,
               "base_model_path": session.base_path,
               "guidance": {m: p["guidance_source"] for m, p in plan.items()},
               "log_history": session.extra.get("log_history", [])}
    atomic_write_json(staging / SUMMARY_FILE, summary)
    atomic_write_json(staging / EVAL_FILE, eval_doc)
    return {**summary, "eval": eval_doc}


def inputs_key(method: str, cfg, student, plan: dict, rows: list[dict], extra=None) -> str:
    """What a run depends on: config, student model, training rows, held-out records and guidance."""
    held = {m: {"records": p["held"], "guidance": p["guidance"].content_hash()} for m, p in sorted(plan.items())}
    return inputs_hash({"method": method, "config": dict(cfg.__dict__), "student": getattr(student, "fingerprint", ""),
                        "rows": rows, "held": held, "extra": extra})


def _reuse_or_train(out_root: Path, key: str, train: Callable[[str, Path], dict], log) -> dict:
    """The latest run when it had these inputs (a re-run redoes nothing); else train a new one."""
    latest = Path(out_root) / LATEST_FILE
    if latest.is_file():
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        run_dir = Path(out_root) / RUNS_DIR / pointer["run_id"]
        if pointer["inputs_key"] == key and (run_dir / SUMMARY_FILE).is_file() and (run_dir / EVAL_FILE).is_file():
            log(f"run {pointer['run_id']}: same inputs as this request (inputs_key {key}), reused, nothing retrained")
            summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
            return {**summary, "eval": json.loads((run_dir / EVAL_FILE).read_text(encoding="utf-8")),
                    "run_dir": str(run_dir), "reused": True}
    run_id, staging = new_run(out_root)
    result = in_staging(staging, lambda: train(run_id, staging))
    run_dir = publish(staging, run_id)
    atomic_write_json(latest, {"run_id": run_id, "inputs_key": key})  # after the run is complete, never before
    return {**result, "run_dir": str(run_dir), "reused": False}


def reward_funcs_for(cfg: GRPORunConfig) -> list:
    """The verdict rewards at the run config's weights (seed 003: label 1.0, format 0.2)."""
    return default_reward_funcs(cfg.label_weight, cfg.format_weight)


def run_grpo(cfg: GRPORunConfig, student, *, data_root: Path, images_root: Path, out_root: Path,
             missions: list[str] | None = None, reward_funcs: list | None = None,
             log: Callable[[str], None] = print) -> dict:
    data_root = Path(data_root)
    plan = mission_plan(data_root, _missions(data_root, missions), cfg.seed, cfg.guidance)
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
        session = student.grpo(rows, cfg, funcs, staging, log=log)
        return _finish(session, plan, cfg, images_root, staging, run_id,
                       {"method": "grpo", "train_rows": len(rows), "held_out_rows": len(held)})

    return _reuse_or_train(out_root, key, train, log)


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


def run_dpo(cfg: DPORunConfig, student, *, data_root: Path, images_root: Path, out_root: Path,
            missions: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    data_root = Path(data_root)
    plan = mission_plan(data_root, _missions(data_root, missions), cfg.seed, cfg.guidance)
    pairs, dropped = load_pairs(data_root, plan)
    if not pairs:
        raise ValueError(f"no preference pairs under {data_root / DISTILL_ASSET}/<mission>/{PAIRS_FILE} "
                         "(after dropping held-out groups): materialize distill_chatml with preference_pairs on")
    key = inputs_key("dpo", cfg, student, plan, pairs)

    def train(run_id: str, staging: Path) -> dict:
        session = student.dpo(pairs, cfg, cfg.beta, staging, log=log)
        return _finish(session, plan, cfg, images_root, staging, run_id,
                       {"method": "dpo", "train_pairs": len(pairs), "dropped_held_out": dropped})

    return _reuse_or_train(out_root, key, train, log)
