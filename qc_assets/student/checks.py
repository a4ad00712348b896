"""The student's checks: the eval gate and that the merged checkpoint loads (both blocking)."""

import dagster as dg

from qc_assets.asset_names import FUSED_SFT_CHECKPOINT
from qc_assets.student.assets import fused_sft_checkpoint, last_run
from qc_assets.student.evaluate import gate_table
from qc_assets.student.sft import ADAPTER_DIR, CURRENT, EVAL_FILE, REPORT_FILE, RUNS_DIR
from resources.storage import StorageResource
from resources.training.resource import StudentTrainingResource


@dg.asset_check(
    asset=fused_sft_checkpoint,
    blocking=True,
    description="No mission's student is worse than its base beyond the paired bootstrap interval.",
)
def fused_sft_eval_gate(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return eval_gate_result(storage)


def eval_gate_result(storage: StorageResource) -> dg.AssetCheckResult:
    run_id, doc = last_run(storage)
    if doc is None:
        return dg.AssetCheckResult(
            passed=False, metadata={"expected": f"runs/<run_id>/{EVAL_FILE}", "actual": f"missing for run {run_id}"}
        )
    cfg = doc["config"]
    return dg.AssetCheckResult(
        passed=bool(doc["passed"]),
        metadata={
            "expected": f"per mission and metric: {cfg['confidence']:.0%} interval of (student - base) reaches "
            f">= {cfg['min_improvement']:+.2f}; >= 1 held-out item",
            "actual": "ok, promoted" if doc["passed"] else "failed, not promoted: " + "; ".join(doc["failures"])[:900],
            "eval_table": dg.MetadataValue.md(gate_table(doc["gates"])),
            "run_id": run_id,
        },
    )


@dg.asset_check(
    asset=fused_sft_checkpoint,
    blocking=True,
    description="The run's adapter and merged checkpoint exist and the merged checkpoint loads.",
)
def fused_sft_checkpoint_loads(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, student: StudentTrainingResource
) -> dg.AssetCheckResult:
    return checkpoint_loads_result(storage, student.device, student.dtype)


def checkpoint_loads_result(storage: StorageResource, device: str, dtype: str) -> dg.AssetCheckResult:
    from resources.training.sft_vl import load_student

    run_id, _ = last_run(storage)
    run_dir = storage.root() / FUSED_SFT_CHECKPOINT / RUNS_DIR / str(run_id)
    expected = [
        f"{ADAPTER_DIR}/adapter_config.json",
        f"{ADAPTER_DIR}/adapter_model.safetensors",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        REPORT_FILE,
    ]
    missing = [n for n in expected if not (run_dir / n).is_file()]
    if run_id is None or missing:
        return dg.AssetCheckResult(
            passed=False, metadata={"expected": expected, "actual": f"missing: {missing}", "run_id": str(run_id)}
        )
    try:
        load_student(str(run_dir), device, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        return dg.AssetCheckResult(
            passed=False, metadata={"expected": "merged checkpoint loads", "actual": f"{type(e).__name__}: {e}"[:1000]}
        )
    current = storage.root() / FUSED_SFT_CHECKPOINT / CURRENT
    return dg.AssetCheckResult(
        passed=True,
        metadata={
            "expected": "merged checkpoint loads",
            "actual": "ok",
            "run_path": dg.MetadataValue.path(str(run_dir)),
            "current": str(current.resolve()) if current.exists() else "none yet",
        },
    )


asset_checks = [fused_sft_eval_gate, fused_sft_checkpoint_loads]
