"""Pieces every student run shares (SFT, DPO, GRPO): per-mission held-out split and guidance, the
per-mission base-vs-trained evaluation, and the staging -> `runs/<run_id>` rename.

DPO and GRPO runs (`dpo.py`, `grpo.py`) train on the train side of each mission's split only, are
evaluated base vs trained on the held-out side afterwards and write `runs/<run_id>/` (adapter, merged
checkpoint, eval.json, summary). They are reported, not promoted: `fused_sft_checkpoint/current` is
the served student. `latest.json` names the latest run and its inputs key; a request with the same
inputs returns that run instead of training again (`reuse_or_train`)."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance, load_guidance
from qc_assets.student.evaluate import evaluate, held_out_records, mission_gate
from qc_assets.student.sources import discover_missions
from resources.store import atomic_write_json, inputs_hash, read_jsonl

STAGE_A_ASSET = "stage_a_summaries"
STAGE_B_ASSET = "stage_b_guidance"
RUNS_DIR = "runs"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "eval.json"
LATEST_FILE = "latest.json"


def resolve_guidance(stage_b_dir: Path, mission, choice: str) -> tuple[Guidance, str]:
    """(guidance, how it was chosen). `best` fails when Stage-B left none: no silent fallback."""
    if choice == "initial":
        return Guidance.initial(mission), "initial (config guidance: initial)"
    try:
        guidance = load_guidance(stage_b_dir, "best")
    except (ValueError, OSError, KeyError) as e:
        raise ValueError(
            f"mission {mission.name!r}: no usable Stage-B guidance under {stage_b_dir} ({e}); "
            "materialize stage_b_guidance for it, or set guidance: initial to evaluate with "
            "the initial guidance"
        ) from e
    return guidance, f"best (version {guidance.version})"


def mission_plan(data_root: Path, missions: list[str], seed: int, guidance: str) -> dict[str, dict]:
    """Per mission: its records, the held-out ones (never trained on), the rest, and the guidance."""
    plan = {}
    for name in missions:
        mission = get_mission(name)
        stage_b_dir = Path(data_root) / STAGE_B_ASSET / name
        records = read_jsonl(Path(data_root) / STAGE_A_ASSET / name / "records.jsonl")
        chosen, how = resolve_guidance(stage_b_dir, mission, guidance)
        held, split = (
            held_out_records(records, stage_b_dir, seed, seeded_fallback=guidance == "initial")
            if records
            else ([], "no Stage-A records")
        )
        held_groups = {r["group_id"] for r in held}
        plan[name] = {
            "mission": mission,
            "records": records,
            "held": held,
            "held_groups": held_groups,
            "train": [r for r in records if r["group_id"] not in held_groups],
            "split": split,
            "guidance": chosen,
            "guidance_source": how,
        }
    return plan


def evaluate_session(session, plan: dict, eval_cfg, images_root: Path, seed: int) -> dict:
    """Base (adapter off) vs trained (adapter on) on every mission's held-out items, with the gate."""
    per_mission, gates = {}, []
    for name, p in plan.items():
        results = {
            side: evaluate(
                session.generator(adapter),
                p["mission"],
                p["guidance"],
                p["held"],
                images_root,
                eval_cfg.max_groups,
                eval_cfg.stage_a_images,
                eval_cfg.max_new_tokens,
            )
            for side, adapter in (("base", False), ("fused", True))
        }
        gate = mission_gate(name, results["base"], results["fused"], eval_cfg, seed)
        gates.append(gate)
        per_mission[name] = {
            "held_out_source": p["split"],
            "held_out_records": [r["record_id"] for r in p["held"]],
            "guidance": p["guidance_source"],
            "guidance_version": p["guidance"].version,
            "base": results["base"],
            "fused": results["fused"],
            "gate": gate,
        }
    failures = [f"{g['mission']}: {f}" for g in gates for f in g["failures"]]
    return {
        "passed": not failures,
        "failures": failures,
        "gates": gates,
        "missions": per_mission,
        "config": asdict(eval_cfg),
    }


def new_run(out_root: Path) -> tuple[str, Path]:
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    staging = Path(out_root) / RUNS_DIR / f".staging-{run_id}"
    staging.mkdir(parents=True)
    return run_id, staging


def in_staging(staging: Path, work: Callable[[], dict]) -> dict:
    """Run `work`; on any failure remove the staging folder, so no half run is ever left behind."""
    try:
        return work()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, run_id: str) -> Path:
    run_dir = staging.parent / run_id
    os.replace(staging, run_dir)
    return run_dir


def missions_on_disk(data_root: Path, missions: list[str] | None) -> list[str]:
    found = sorted(missions) if missions is not None else discover_missions(data_root)
    if not found:
        raise ValueError(
            f"no mission has Stage-A records or distill rows under {data_root}: materialize stage_a_summaries first"
        )
    return found


def finish_run(session, plan, cfg, images_root, staging: Path, run_id: str, summary: dict) -> dict:
    eval_doc = {"run_id": run_id, **evaluate_session(session, plan, cfg.eval_config(), images_root, cfg.seed)}
    adapter_bytes = session.save_adapter(staging / "adapter")
    session.save_merged(staging)
    summary = {
        **summary,
        "run_id": run_id,
        "config": asdict(cfg),
        "targets": session.targets,
        "trainable_params": session.trainable_params,
        "total_params": session.total_params,
        "adapter_bytes": adapter_bytes,
        "losses": session.losses,
        "train_seconds": session.seconds,
        "base_model_path": session.base_path,
        "guidance": {m: p["guidance_source"] for m, p in plan.items()},
        "log_history": session.extra.get("log_history", []),
    }
    atomic_write_json(staging / SUMMARY_FILE, summary)
    atomic_write_json(staging / EVAL_FILE, eval_doc)
    return {**summary, "eval": eval_doc}


def inputs_key(method: str, cfg, student, plan: dict, rows: list[dict], extra=None) -> str:
    """What a run depends on: config, student model, training rows, held-out records and guidance."""
    held = {m: {"records": p["held"], "guidance": p["guidance"].content_hash()} for m, p in sorted(plan.items())}
    return inputs_hash(
        {
            "method": method,
            "config": asdict(cfg),
            "student": getattr(student, "fingerprint", ""),
            "rows": rows,
            "held": held,
            "extra": extra,
        }
    )


def reuse_or_train(out_root: Path, key: str, train: Callable[[str, Path], dict], log) -> dict:
    """The latest run when it had these inputs (a re-run redoes nothing); else train a new one."""
    latest = Path(out_root) / LATEST_FILE
    if latest.is_file():
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        run_dir = Path(out_root) / RUNS_DIR / pointer["run_id"]
        if pointer["inputs_key"] == key and (run_dir / SUMMARY_FILE).is_file() and (run_dir / EVAL_FILE).is_file():
            log(f"run {pointer['run_id']}: same inputs as this request (inputs_key {key}), reused, nothing retrained")
            summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
            return {
                **summary,
                "eval": json.loads((run_dir / EVAL_FILE).read_text(encoding="utf-8")),
                "run_dir": str(run_dir),
                "reused": True,
            }
    run_id, staging = new_run(out_root)
    result = in_staging(staging, lambda: train(run_id, staging))
    run_dir = publish(staging, run_id)
    atomic_write_json(latest, {"run_id": run_id, "inputs_key": key})  # after the run is complete, never before
    return {**result, "run_dir": str(run_dir), "reused": False}
