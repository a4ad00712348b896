"""Dagster wiring of the student group: `fused_sft_checkpoint` here, `dpo_checkpoint` and
`grpo_checkpoint` in `preference_assets.py` (all listed in `assets` below).

Its checks are in `checks.py`, its jobs in `jobs.py`.

`fused_sft_checkpoint`: one student for every mission, trained through the
student-training resource, evaluated per mission against its base, promoted to `current` on pass.

Shape: an unpartitioned asset that depends on every mission partition of `distill_chatml` and
`stage_a_summaries` (Dagster maps an unpartitioned asset onto all upstream partitions), because the
student is one model over all missions. It has its own job (`student_job`, jobs.py): a job cannot mix
partitioned and unpartitioned assets, so it runs after the per-mission `qc_pipeline` runs.
"""

import json

import dagster as dg

from qc_assets.asset_names import DISTILL_CHATML, FUSED_SFT_CHECKPOINT, STAGE_A_SUMMARIES, STAGE_B_GUIDANCE
from qc_assets.gpu_steps import model_asset
from qc_assets.plots import png_markdown
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_b.automation import RETRAIN_CONDITION
from qc_assets.student import preference_assets
from qc_assets.student.config import FusionConfig, FusionRunConfig
from qc_assets.student.evaluate import GATED_METRICS, gate_table
from qc_assets.student.mixing import report_table
from qc_assets.student.sft import EVAL_FILE, LOSS_PLOT, PROMOTIONS, RUNS_DIR, FusionResult, NoTrainingData, run_fusion
from resources.storage import StorageResource
from resources.store import read_jsonl
from resources.training.resource import StudentTrainingResource

GROUP = "student"
FusedSFTConfig = dagster_config(FusionRunConfig, "FusedSFTConfig")


@model_asset(
    retry=False,  # a training run: a retry would only repeat it
    name=FUSED_SFT_CHECKPOINT,
    # Stage-B: its split picks the held-out groups and its best guidance writes the eval prompts
    deps=[DISTILL_CHATML, STAGE_A_SUMMARIES, STAGE_B_GUIDANCE],
    automation_condition=RETRAIN_CONDITION,
    group_name=GROUP,
    kinds={"pytorch"},
    description="One LoRA SFT student over every mission's sources (TRL SFTTrainer), gated per mission "
    "against its base; `current` moves only when the gate passes.",
)
def fused_sft_checkpoint(
    context: dg.AssetExecutionContext,
    config: FusedSFTConfig,
    storage: StorageResource,
    student: StudentTrainingResource,
) -> dg.MaterializeResult:
    options = to_domain(config, FusionRunConfig)
    cfg = options.fusion_config()
    try:
        backend = student.get_student()
        fingerprint = backend.fingerprint
    except (OSError, ValueError) as e:
        raise dg.Failure(
            f"could not prepare the student model: {e}",
            metadata={"model_path": student.model_path, "smoke_model": student.smoke_model},
        ) from e
    out_root = storage.root() / FUSED_SFT_CHECKPOINT
    try:
        result = run_fusion(
            cfg,
            backend,
            data_root=storage.root(),
            images_root=storage.images(),
            out_root=out_root,
            log=context.log.info,
        )
    except NoTrainingData as e:
        raise dg.Failure(str(e), metadata={"sources": dg.MetadataValue.json([s.name for s in cfg.sources])}) from e
    except OSError as e:
        raise dg.Failure(
            f"fusion I/O or model loading failed: {e}", metadata={"out_root": dg.MetadataValue.path(str(out_root))}
        ) from e
    context.log.info(
        ("PROMOTED" if result.promoted else "REFUSED")
        + f" student run {result.run_id}"
        + (" (reused, same inputs)" if result.reused else "")
        + f"; current = {result.current_run}"
    )
    return dg.MaterializeResult(metadata=_metadata(result, cfg, fingerprint, backend.note))


def _metadata(result: FusionResult, cfg: FusionConfig, fingerprint: str, note: str) -> dict:
    ev = result.eval
    plot = result.run_dir / LOSS_PLOT
    verdict = "promoted to current" if result.promoted else "REFUSED (gate failed; current unchanged)"
    if result.reused:
        verdict += "; reused: same inputs as this run, nothing retrained"
    preview = (
        f"run {result.run_id}: {verdict}; loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; "
        f"{len(result.missions)} missions; " + "; ".join(ev["failures"])
    )
    meta = {
        "dagster/row_count": result.rows,
        "mission": ", ".join(result.missions),
        "model_fingerprint": fingerprint,
        "model_note": note,
        "seed": cfg.seed,
        "run_id": result.run_id,
        "promoted": result.promoted,
        "fusion/reused": result.reused,
        "inputs_key": result.inputs_key,
        "current_run": result.current_run or "",
        "guidance": dg.MetadataValue.json(result.guidance),
        "preview": dg.MetadataValue.md(preview[:480]),
        "sources": dg.MetadataValue.md(report_table(result.sources)),
        "empty_sources": dg.MetadataValue.json(result.empty_sources),
        "eval_table": dg.MetadataValue.md(gate_table(ev["gates"])),
        "loss_plot": dg.MetadataValue.md(png_markdown(plot.read_bytes(), "loss curve")),
        "run_path": dg.MetadataValue.path(str(result.run_dir)),
        "lora_targets": dg.MetadataValue.json(result.targets),
        "fusion/adapter_bytes": result.adapter_bytes,
        "fusion/trainable_params": result.trainable_params,
        "fusion/total_params": result.total_params,
        "fusion/first_loss": result.losses[0],
        "fusion/final_loss": result.losses[-1],
        "fusion/steps": len(result.losses),
        "fusion/train_seconds": round(result.train_seconds, 2),
        "fusion/gate_passed": ev["passed"],
        "config": dg.MetadataValue.json(cfg.to_dict()),
    }
    for r in result.sources:
        meta[f"fusion/realised_ratio/{r.name}"] = r.realised_ratio
    for mission, doc in ev["missions"].items():
        for m in GATED_METRICS:
            meta[f"{mission}/base/{m}"] = doc["base"][m]
            meta[f"{mission}/student/{m}"] = doc["fused"][m]
    return meta


def last_run(storage: StorageResource) -> tuple[str | None, dict | None]:
    """(run id, eval.json) of the latest fusion run, from the promotions log."""
    log = read_jsonl(storage.root() / FUSED_SFT_CHECKPOINT / PROMOTIONS)
    if not log:
        return None, None
    run_id = log[-1]["run_id"]
    path = storage.root() / FUSED_SFT_CHECKPOINT / RUNS_DIR / run_id / EVAL_FILE
    return run_id, json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


assets = [fused_sft_checkpoint, *preference_assets.assets]
