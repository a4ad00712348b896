"""FastDistill asset group: thin Dagster wrappers over `pipeline.py`, partitioned by run_id.

inputs (canonicalize + dedup) -> teacher -> scored (clean, rule filter, exec eval, judge, score)
-> dataset (select, export, run reports) -> student (LoRA SFT + before/after eval).
Each writes `<data_root>/fastdistill/<run_id>/<stage>/`.
No `from __future__ import annotations` here: Dagster resolves the Config annotations at runtime.
"""

from pathlib import Path

import dagster as dg

from qc_assets.asset_names import FASTDISTILL_DATASET, FASTDISTILL_SCORED
from qc_assets.fastdistill import pipeline
from qc_assets.fastdistill.assets_meta import md_preview, plot_md
from qc_assets.fastdistill.config import FastDistillSettings, TextStudentConfig
from qc_assets.fastdistill.partitions import fastdistill_runs
from qc_assets.gpu_steps import model_asset
from qc_assets.metadata import parquet_column_schema, records_table
from qc_assets.run_config import dagster_config, to_domain
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.training.text_student import TextStudentResource

GROUP = "fastdistill"


# the launchpad form of the run settings (recorded once per run by fastdistill_inputs), from the dataclass
FastDistillRunConfig = dagster_config(FastDistillSettings, "FastDistillRunConfig")
FastDistillStudentConfig = dagster_config(TextStudentConfig, "FastDistillStudentConfig")


def run_dir(storage: StorageResource, run_id: str) -> Path:
    return storage.asset_dir("fastdistill", run_id)


def _fail(step: str, err: Exception, run_id: str) -> dg.Failure:
    return dg.Failure(
        description=f"FastDistill {step} failed for run {run_id}: {err}",
        metadata={"run_id": run_id, "error": f"{type(err).__name__}: {err}"},
    )


@dg.asset(group_name=GROUP, partitions_def=fastdistill_runs, kinds={"python", "parquet"})
def fastdistill_inputs(
    context: dg.AssetExecutionContext, config: FastDistillRunConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Load or generate Text2SQL inputs, canonicalize, dedup by sample_id; records the run config."""
    run_id = context.partition_key
    cfg = to_domain(config, FastDistillSettings)
    out = pipeline.stage_inputs(run_dir(storage, run_id), run_id, cfg)
    rows = out["rows"]
    cols = ["split", "lang", "db_id", "question"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "run_id": run_id,
            "seed": cfg.seed,
            "fastdistill/loaded": out["loaded"],
            "fastdistill/duplicates_dropped": out["duplicates_dropped"],
            "fastdistill/train_inputs": sum(r["split"] == "train" for r in rows),
            "fastdistill/dev_inputs": sum(r["split"] == "dev" for r in rows),
            "manifest": dg.MetadataValue.json(out["reports"]["manifest"]),
            "preview": md_preview(rows, cols),
            "sample": records_table(rows[:10], cols),
            **parquet_column_schema(run_dir(storage, run_id) / "dedup" / "records.parquet"),
        }
    )


def born_again_teacher(cfg: FastDistillSettings, storage: StorageResource, teacher_llm: LLMResource) -> LLMResource:
    """The teacher resource pointed at an earlier run's merged student (a HF folder, transformers backend):
    on the teacher resource's device, dtype, batch size and threads (QC_TEACHER_DEVICE / _DTYPE), as a GPU
    teacher would run, not CPU float32."""
    model_dir = storage.root() / "fastdistill" / cfg.teacher_from_run / "train" / "model"
    if not (model_dir / "config.json").exists():
        raise ValueError(f"teacher_from_run={cfg.teacher_from_run!r} has no trained student at {model_dir}")
    return teacher_llm.model_copy(
        update={
            "backend": "transformers",
            "model_path": str(model_dir),
            "gguf_file": None,
            "base_url": "",
            "model": "",
            "api_key": None,
            "structured_output": "none",
            "thinking": "off",
        }
    )


def teacher_llm_for(cfg: FastDistillSettings, storage: StorageResource, teacher_llm: LLMResource):
    """The configured provider, or (Born-Again) an earlier run's merged student."""
    if not cfg.teacher_from_run:
        return teacher_llm.get_llm()
    return born_again_teacher(cfg, storage, teacher_llm).get_llm()


@model_asset(group_name=GROUP, partitions_def=fastdistill_runs, deps=[fastdistill_inputs], kinds={"python", "parquet"})
def fastdistill_teacher(
    context: dg.AssetExecutionContext, storage: StorageResource, teacher_llm: LLMResource
) -> dg.MaterializeResult:
    """Teacher candidates with bounded in-flight requests and a sample_id cache (re-runs call nothing)."""
    run_id = context.partition_key
    folder = run_dir(storage, run_id)
    cfg = pipeline.load_config(folder)
    try:
        llm = teacher_llm_for(cfg, storage, teacher_llm)
        out = pipeline.stage_teacher(folder, cfg, llm)
    except (OSError, RuntimeError, ValueError) as err:
        raise _fail("teacher generation", err, run_id) from err
    rows = out["rows"]
    if rows and all(r["teacher_text"] is None for r in rows):
        raise dg.Failure(
            description=f"every teacher request failed for run {run_id}",
            metadata={"first_error": rows[0]["teacher_error"], "teacher": out["teacher_fingerprint"]},
        )
    write_lineage(folder, run_id, cfg, out["teacher_fingerprint"])
    timing = out["reports"]["timing_report"]["stages"]["teacher"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "run_id": run_id,
            "seed": cfg.seed,
            "model_fingerprint": out["teacher_fingerprint"],
            "teacher_from_run": cfg.teacher_from_run or "-",
            "decode": dg.MetadataValue.json(cfg.decode_params().as_dict()),
            "fastdistill/teacher_calls": out["teacher_calls"],
            "fastdistill/cached_samples": out["cached"],
            "fastdistill/failed_samples": out["failed_samples"],
            "fastdistill/teacher_tokens_per_sec": out["teacher_tokens_per_sec"] or 0.0,
            "fastdistill/max_in_flight_seen": out["max_in_flight_seen"],
            "fastdistill/latency_p50_s": timing["p50"] or 0.0,
            "fastdistill/latency_p95_s": timing["p95"] or 0.0,
            "preview": md_preview(rows, ["question", "teacher_text", "teacher_error"]),
            **parquet_column_schema(folder / "teacher" / "candidates.parquet"),
        }
    )


def write_lineage(folder: Path, run_id: str, cfg: FastDistillSettings, fingerprint: str) -> None:
    """Born-Again lineage: which run's student (if any) taught this run."""
    from resources.store import atomic_write_json

    atomic_write_json(
        folder / "reports" / "lineage.json",
        {
            "run_id": run_id,
            "teacher_from_run": cfg.teacher_from_run or None,
            "teacher_fingerprint": fingerprint,
        },
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=fastdistill_runs,
    deps=[fastdistill_teacher],
    kinds={"python", "sqlite"},
    check_specs=[
        dg.AssetCheckSpec(
            "exec_pass_rate",
            asset=FASTDISTILL_SCORED,
            description="share of candidates that execute >= min_exec_pass_rate",
        )
    ],
)
def fastdistill_scored(
    context: dg.AssetExecutionContext, storage: StorageResource, teacher_llm: LLMResource
) -> dg.MaterializeResult:
    """Clean -> rule filter -> sandboxed exec eval vs gold -> optional judge -> score."""
    run_id = context.partition_key
    folder = run_dir(storage, run_id)
    cfg = pipeline.load_config(folder)
    judge = teacher_llm_for(cfg, storage, teacher_llm) if cfg.judge else None
    out = pipeline.stage_gates(folder, cfg, judge)
    q = out["reports"]["quality_report"]
    exec_rate = q["exec_pass_rate"] or 0.0
    check = dg.AssetCheckResult(
        check_name="exec_pass_rate",
        passed=exec_rate >= cfg.min_exec_pass_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"expected_min": cfg.min_exec_pass_rate, "actual": exec_rate, "candidates": q["total"]},
    )
    rows = out["rows"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "run_id": run_id,
            "seed": cfg.seed,
            "fastdistill/exec_pass_rate": exec_rate,
            "fastdistill/gold_match_rate": q["gold_match_rate"] or 0.0,
            "fastdistill/rule_rejected": sum(r["reject_reason"] is not None for r in rows),
            "fastdistill/judge_calls": out.get("judge_calls", 0),
            "quality_report": dg.MetadataValue.json(q),
            "reject_reasons": plot_md(q["reject_reason_counts"], "reject reasons"),
            "preview": md_preview(rows, ["sql", "reject_reason", "exec_error_class", "gold_match"]),
            **parquet_column_schema(folder / "score" / "candidates.parquet"),
        },
        check_results=[check],
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=fastdistill_runs,
    deps=[fastdistill_scored],
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("keep_rate", asset=FASTDISTILL_DATASET, description="kept / candidates >= min_keep_rate"),
        dg.AssetCheckSpec(
            "no_empty_outputs",
            asset=FASTDISTILL_DATASET,
            blocking=True,
            description="every exported SFT row has a non-empty assistant SQL",
        ),
    ],
)
def fastdistill_dataset(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Select by keep rules; export chatml SFT + preference pairs; write run-level reports."""
    run_id = context.partition_key
    folder = run_dir(storage, run_id)
    cfg = pipeline.load_config(folder)
    out = pipeline.stage_select_export(folder, cfg)
    q = out["select_reports"]["quality_report"]
    keep_rate = q["p_keep"] or 0.0
    empty = [r["candidate_id"] for r in out["sft"] if not (r["messages"][-1]["content"] or "").strip()]
    checks = [
        dg.AssetCheckResult(
            check_name="keep_rate",
            passed=keep_rate >= cfg.min_keep_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"expected_min": cfg.min_keep_rate, "actual": keep_rate, "kept": q["kept"]},
        ),
        dg.AssetCheckResult(
            check_name="no_empty_outputs",
            passed=not empty,
            metadata={"expected": 0, "actual": len(empty), "examples": str(empty[:5])},
        ),
    ]
    run_reports = out["run_reports"]
    stages = run_reports["timing_report"]["stages"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(out["sft"]),
            "run_id": run_id,
            "seed": cfg.seed,
            "fastdistill/kept": q["kept"],
            "fastdistill/keep_rate": keep_rate,
            "fastdistill/preference_pairs": len(out["pairs"]),
            "fastdistill/teacher_tokens_per_sec": run_reports["metrics"]["teacher_tokens_per_sec"] or 0.0,
            "fastdistill/pipeline_kept_samples_per_hour": run_reports["metrics"]["pipeline_kept_samples_per_hour"]
            or 0.0,
            "quality_report": dg.MetadataValue.json(q),
            "timing": records_table(
                [{"stage": s, **{k: v for k, v in t.items()}} for s, t in stages.items()],
                ["stage", "count", "p50", "p90", "p95", "wall_s"],
            ),
            "stage_wall_s": plot_md({s: t["wall_s"] for s, t in stages.items()}, "wall seconds per stage"),
            "export_path": dg.MetadataValue.path(str(folder / "export")),
            **parquet_column_schema(folder / "export" / "sft_chatml.parquet"),
            "preview": md_preview(
                [
                    {
                        "question": r["messages"][1]["content"].rsplit("Question: ", 1)[-1],
                        "assistant": r["messages"][-1]["content"],
                    }
                    for r in out["sft"]
                ],
                ["question", "assistant"],
            ),
        },
        check_results=checks,
    )


@model_asset(
    retry=False,
    group_name=GROUP,
    partitions_def=fastdistill_runs,
    deps=[fastdistill_dataset],
    kinds={"pytorch", "python"},
)
def fastdistill_student(
    context: dg.AssetExecutionContext,
    config: FastDistillStudentConfig,
    storage: StorageResource,
    text_student: TextStudentResource,
) -> dg.MaterializeResult:
    """Student LoRA SFT and exec-eval of base vs student on held-out dev questions."""
    from qc_assets.fastdistill.student_run import run_student

    run_id = context.partition_key
    folder = run_dir(storage, run_id)
    student_cfg = to_domain(config, TextStudentConfig)
    try:
        out = run_student(folder, student_cfg, text_student)
    except (OSError, RuntimeError, ValueError) as err:
        raise _fail("student training/eval", err, run_id) from err
    train, before, after = out["train"], out["before"], out["after"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": train["examples"],
            "run_id": run_id,
            "seed": student_cfg.lora.seed,
            "fastdistill/student_reused": out["reused"],  # same inputs as the finished train + eval: not redone
            "model_fingerprint": after["model"],
            "base_fingerprint": before["model"],
            "hyperparameters": dg.MetadataValue.json(
                {k: train[k] for k in ("steps", "batch_size", "learning_rate", "lora_r")}
            ),
            "fastdistill/train_tokens_per_sec": train["train_tokens_per_sec"] or 0.0,
            "fastdistill/final_loss": train["losses"][-1],
            "fastdistill/eval_before_gold_match_rate": before["gold_match_rate"],
            "fastdistill/eval_after_gold_match_rate": after["gold_match_rate"],
            "fastdistill/eval_before_exec_pass_rate": before["exec_pass_rate"],
            "fastdistill/eval_after_exec_pass_rate": after["exec_pass_rate"],
            "loss_curve": plot_md({str(i + 1): v for i, v in enumerate(train["losses"])}, "training loss", line=True),
            "eval": records_table(
                [{"model": "base", **before}, {"model": "student", **after}],
                ["model", "count", "rule_pass_rate", "exec_pass_rate", "gold_match_rate"],
            ),
            "student_model_dir": dg.MetadataValue.path(train["model_dir"]),
            "lineage": dg.MetadataValue.json(out["lineage"]),
        }
    )


assets = [fastdistill_inputs, fastdistill_teacher, fastdistill_scored, fastdistill_dataset, fastdistill_student]
# no separate checks: each check is computed from its step's own outputs, so it is declared on the asset
# (check_specs) and reported with the materialization
asset_checks: list = []
fastdistill_job = dg.define_asset_job("fastdistill_job", selection=dg.AssetSelection.groups(GROUP))
jobs = [fastdistill_job]
