"""Dagster wiring for the optional preference/RL students: `dpo_checkpoint` (TRL DPOTrainer on the
exported preference pairs) and `grpo_checkpoint` (TRL GRPOTrainer with the verdict rewards).

Both are unpartitioned like `fused_sft_checkpoint` (one student for all missions), each in its own
job (`dpo_job`, `grpo_job` in jobs.py) so nothing runs them by default: the demo does not.
"""

import dagster as dg

from qc_assets.asset_names import DISTILL_CHATML, DPO_CHECKPOINT, GRPO_CHECKPOINT, STAGE_A_SUMMARIES, STAGE_B_GUIDANCE
from qc_assets.gpu_steps import model_asset
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.student.dpo import run_dpo
from qc_assets.student.evaluate import GATED_METRICS, gate_table
from qc_assets.student.grpo import run_grpo
from qc_assets.student.preference_config import DPORunConfig, GRPORunConfig
from resources.storage import StorageResource
from resources.training.resource import StudentTrainingResource

GROUP = "student"
DPOConfig = dagster_config(DPORunConfig, "DPOConfig")
GRPOConfig = dagster_config(GRPORunConfig, "GRPOConfig")


def _metadata(summary: dict, fingerprint: str, note: str, method: str, n_rows: int) -> dict:
    ev = summary["eval"]
    losses = summary["losses"] or [float("nan")]
    preview = (
        f"{method} run {summary['run_id']}: {n_rows} rows, {len(summary['losses'])} steps; held-out eval "
        f"{'not worse than base' if ev['passed'] else 'WORSE than base: ' + '; '.join(ev['failures'])}"
    )
    meta = {
        "dagster/row_count": n_rows,
        "mission": ", ".join(sorted(ev["missions"])),
        "model_fingerprint": fingerprint,
        "model_note": note,
        "seed": summary["config"]["lora"]["seed"],
        "run_id": summary["run_id"],
        f"{method}/reused": summary["reused"],
        "preview": dg.MetadataValue.md(preview[:480]),
        "guidance": dg.MetadataValue.json(summary["guidance"]),
        "eval_table": dg.MetadataValue.md(gate_table(ev["gates"])),
        "run_path": dg.MetadataValue.path(summary["run_dir"]),
        "config": dg.MetadataValue.json(summary["config"]),
        f"{method}/steps": len(summary["losses"]),
        f"{method}/first_loss": losses[0],
        f"{method}/final_loss": losses[-1],
        f"{method}/trainable_params": summary["trainable_params"],
        f"{method}/train_seconds": round(summary["train_seconds"], 2),
        f"{method}/eval_not_worse": ev["passed"],
    }
    for mission, doc in ev["missions"].items():
        for m in GATED_METRICS:
            meta[f"{mission}/base/{m}"] = doc["base"][m]
            meta[f"{mission}/{method}/{m}"] = doc["fused"][m]
    return meta


def _student(student: StudentTrainingResource):
    try:
        backend = student.get_student()
        return backend, backend.fingerprint
    except (OSError, ValueError) as e:
        raise dg.Failure(
            f"could not prepare the student model: {e}",
            metadata={"model_path": student.model_path, "smoke_model": student.smoke_model},
        ) from e


def _train(
    context, cfg, run, method: str, rows_key: str, storage: StorageResource, student: StudentTrainingResource
) -> dg.MaterializeResult:
    """Run `run` (run_dpo / run_grpo) on the student under `<data>/<method>_checkpoint`; its metadata."""
    backend, fingerprint = _student(student)
    summary = run(
        cfg,
        backend,
        data_root=storage.root(),
        images_root=storage.images(),
        out_root=storage.root() / f"{method}_checkpoint",
        log=context.log.info,
    )
    return dg.MaterializeResult(metadata=_metadata(summary, fingerprint, backend.note, method, summary[rows_key]))


@model_asset(
    retry=False,
    name=DPO_CHECKPOINT,
    deps=[DISTILL_CHATML, STAGE_A_SUMMARIES, STAGE_B_GUIDANCE],
    group_name=GROUP,
    kinds={"pytorch"},
    description="LoRA DPO of the student on every mission's exported preference pairs "
    "(TRL DPOTrainer), evaluated per mission on held-out groups.",
)
def dpo_checkpoint(
    context: dg.AssetExecutionContext, config: DPOConfig, storage: StorageResource, student: StudentTrainingResource
) -> dg.MaterializeResult:
    return _train(context, to_domain(config, DPORunConfig), run_dpo, "dpo", "train_pairs", storage, student)


@model_asset(
    retry=False,
    name=GRPO_CHECKPOINT,
    deps=[STAGE_A_SUMMARIES, STAGE_B_GUIDANCE],
    group_name=GROUP,
    kinds={"pytorch"},
    description="LoRA GRPO of the student on every mission's train split (TRL "
    "GRPOTrainer, label + format rewards), evaluated on held-out groups after.",
)
def grpo_checkpoint(
    context: dg.AssetExecutionContext, config: GRPOConfig, storage: StorageResource, student: StudentTrainingResource
) -> dg.MaterializeResult:
    return _train(context, to_domain(config, GRPORunConfig), run_grpo, "grpo", "train_rows", storage, student)


assets = [dpo_checkpoint, grpo_checkpoint]
