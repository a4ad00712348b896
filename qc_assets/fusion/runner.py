"""One fusion run: load and mix sources, LoRA-train the student, save, evaluate base vs fused, gate.

Everything is written to a staging folder first and published into `out_dir` at the end, `eval.json`
last and after the old one is removed, so a crashed run never leaves an old "gate passed" beside a
new adapter. The model library is imported inside `run_fusion` only (the asset module imports this
file at definitions load time).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qc_assets.fusion.config import FusionConfig
from qc_assets.fusion.evaluate import evaluate, held_out_records, regression_gate
from qc_assets.fusion.mixing import SourceReport, mix
from qc_assets.fusion.sources import LoadedSource, load_source
from qc_assets.missions import get_mission
from qc_assets.plots import new_axes, png_bytes
from qc_assets.stage_b.guidance import Guidance, load_guidance
from resources.store import atomic_write_bytes, atomic_write_json, read_jsonl

STAGE_A_ASSET = "stage_a_summaries"
STAGE_B_ASSET = "stage_b_guidance"
ADAPTER_DIR = "adapter"
EVAL_FILE = "eval.json"
REPORT_FILE = "fusion_report.json"
TRAIN_LOG = "train_log.jsonl"
LOSS_PLOT = "loss.png"


class NoTrainingData(ValueError):
    """Every configured source is empty: there is nothing to fine-tune on."""


@dataclass
class FusionResult:
    mission: str
    out_dir: Path
    run_id: str
    rows: int
    sources: list[SourceReport]
    losses: list[float]
    trainable_params: int
    total_params: int
    adapter_bytes: int
    targets: list[str]
    eval: dict
    empty_sources: list[str]
    guidance_version: int | None
    train_seconds: float


def plot_loss(losses: list[float], path: Path, title: str) -> Path:
    fig, ax = new_axes()
    ax.plot(range(1, len(losses) + 1), losses, marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return atomic_write_bytes(path, png_bytes(fig))


def _publish(staging: Path, out_dir: Path) -> None:
    (out_dir / EVAL_FILE).unlink(missing_ok=True)
    for item in sorted(staging.iterdir(), key=lambda p: p.name == EVAL_FILE):
        target = out_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


def _guidance(stage_b_dir: Path, mission) -> Guidance:
    try:
        return load_guidance(stage_b_dir, "best")
    except ValueError:
        return Guidance.initial(mission)


def run_fusion(mission_name: str, cfg: FusionConfig, *, data_root: Path, images_root: Path, model_path: str,
               device: str, dtype: str, out_dir: Path, log: Callable[[str], None] = print) -> FusionResult:
    mission = get_mission(mission_name)
    data_root, out_dir = Path(data_root), Path(out_dir)
    stage_b_dir = data_root / STAGE_B_ASSET / mission.name
    records = read_jsonl(data_root / STAGE_A_ASSET / mission.name / "records.jsonl")
    held, split_note = held_out_records(records, stage_b_dir, cfg.seed) if records else ([], "no Stage-A records")
    exclude = {r["group_id"] for r in held}
    loaded: list[LoadedSource] = [load_source(s, mission=mission.name, data_root=data_root, images_root=images_root,
                                              exclude_groups=exclude) for s in cfg.sources]
    empty = [s.config.name for s in loaded if not s.examples]
    if len(empty) == len(loaded):
        notes = "; ".join(f"{s.config.name}: {s.note or 'empty'}" for s in loaded)
        raise NoTrainingData(f"every fusion source is empty for mission {mission.name!r} ({notes})")
    mixed, reports = mix({s.config.name: s.examples for s in loaded}, {s.config.name: s.config.ratio for s in loaded},
                         cfg.total_rows, cfg.seed, types={s.config.name: s.config.type for s in loaded},
                         notes={s.config.name: s.note for s in loaded})
    for s in loaded:
        if s.note:
            log(f"fusion source {s.config.name}: {s.note}")

    from resources.training import lora_sft_vl as lora_sft

    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    staging = out_dir / f".staging-{run_id}"
    staging.mkdir(parents=True)
    try:
        result = _train_and_evaluate(lora_sft, cfg, mission, mixed, reports, loaded, empty, held, split_note,
                                     stage_b_dir, images_root, model_path, device, dtype, staging, run_id, log)
    except BaseException:
        # a failed run leaves nothing half-written beside the published checkpoint
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out_dir)
    return FusionResult(mission=mission.name, out_dir=out_dir, run_id=run_id, rows=len(mixed), sources=reports,
                        empty_sources=empty, **result)


def _train_and_evaluate(lora_sft, cfg, mission, mixed, reports, loaded, empty, held, split_note, stage_b_dir,
                        images_root, model_path, device, dtype, staging: Path, run_id: str, log) -> dict:
    model, processor = lora_sft.load_student(model_path, device, dtype)
    peft_model, targets = lora_sft.apply_lora(model, cfg.lora)
    train = lora_sft.train_lora(peft_model, processor, mixed, cfg.lora, log_path=staging / TRAIN_LOG, log=log)
    peft_model.save_pretrained(str(staging / ADAPTER_DIR))
    processor.save_pretrained(str(staging))

    guidance = _guidance(stage_b_dir, mission)
    ev = cfg.eval
    results = {}
    for name, adapter in (("base", False), ("fused", True)):
        gen = lora_sft.StudentGenerator(peft_model, processor, adapter=adapter)
        results[name] = evaluate(gen, mission, guidance, held, images_root, ev.max_groups, ev.stage_a_images,
                                 ev.max_new_tokens)
    gate = regression_gate(results["base"], results["fused"], ev.tolerance)
    n_groups = results["fused"]["stage_b/n_groups"]
    if n_groups == 0:
        gate = {**gate, "passed": False, "failures": gate["failures"] + ["no held-out groups to evaluate on"]}
    eval_doc = {"run_id": run_id, "mission": mission.name, "held_out_source": split_note,
                "held_out_records": [r["record_id"] for r in held], "guidance_version": guidance.version,
                "base": results["base"], "fused": results["fused"], "gate": gate}
    adapter_bytes = lora_sft.adapter_size_bytes(staging / ADAPTER_DIR)
    report = {"run_id": run_id, "mission": mission.name, "config": cfg.to_dict(), "rows": len(mixed),
              "sources": [asdict(r) for r in reports], "empty_sources": empty,
              "dropped": {s.config.name: s.dropped for s in loaded if s.dropped},
              "lora_targets": targets, "trainable_params": train.trainable_params,
              "total_params": train.total_params, "dropped_too_long": train.dropped_too_long,
              "adapter_bytes": adapter_bytes, "base_model_path": model_path, "train_seconds": train.seconds,
              "final_loss": train.losses[-1], "first_loss": train.losses[0]}
    atomic_write_json(staging / REPORT_FILE, report)
    plot_loss(train.losses, staging / LOSS_PLOT, f"LoRA SFT loss, run {run_id}")
    atomic_write_json(staging / EVAL_FILE, eval_doc)
    return dict(losses=train.losses, trainable_params=train.trainable_params, total_params=train.total_params,
                adapter_bytes=adapter_bytes, targets=targets, eval=eval_doc, guidance_version=guidance.version,
                train_seconds=train.seconds)
