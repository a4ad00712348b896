"""Dagster wiring for teacher distillation: converged Stage-B guidance + teacher LLM -> chatml corpus (its
checks: checks.py)."""

import json

import dagster as dg

from qc_assets.asset_names import DISTILL_CHATML, STAGE_B_GUIDANCE
from qc_assets.distill.config import DistillConfig
from qc_assets.distill.pipeline import DistillResult, run_distill
from qc_assets.distill.sources import (
    SourceChoice,
    choose_source,
    kept_epoch_rows,
    selected_answers,
    stage_b_constrained,
    stage_b_model,
    test_record_ids,
)
from qc_assets.gpu_steps import mission_model_asset
from qc_assets.markdown import md_table
from qc_assets.metadata import parquet_column_schema
from qc_assets.missions import get_mission
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_a.assets import load_stage_a_records
from qc_assets.stage_b.automation import RETRAIN_CONDITION
from qc_assets.stage_b.guidance import load_guidance
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import iter_jsonl

# The run config is derived from the one distillation config class; fields and help live there.
DistillAssetConfig = dagster_config(DistillConfig, "DistillAssetConfig")


def stage_b_convergence(stage_b_dir, allow_unconverged: bool) -> tuple[dict, str | None]:
    """(what the metadata records about the Stage-B run, why distillation must refuse it or None)."""
    path = stage_b_dir / "result.json"
    if not path.exists():
        return {}, (
            f"no Stage-B result under {stage_b_dir}: {STAGE_B_GUIDANCE} must be materialized first "
            "(distillation runs on converged guidance)"
        )
    result = json.loads(path.read_text(encoding="utf-8"))
    reason = result.get("stop_reason", "unknown (result.json predates stop_reason: re-materialize Stage-B)")
    info = {
        "stage_b_run_id": result.get("run_id"),
        "stage_b_stop_reason": reason,
        "stage_b_converged": reason == "converged",
        "allow_unconverged": allow_unconverged,
    }
    if reason == "converged" or allow_unconverged:
        return info, None
    return info, (
        f"Stage-B run {result.get('run_id')!r} did not converge (stop_reason={reason}); distillation "
        "runs on converged guidance only. Re-run Stage-B until stage_b_converged passes, or set "
        "allow_unconverged: true in distill_chatml's run config (the metadata will record it)"
    )


def _load_inputs(storage: StorageResource, mission: str, which: str, allow_unconverged: bool):
    records = load_stage_a_records(storage, mission)
    stage_b_dir = storage.root() / STAGE_B_GUIDANCE / mission
    state_path = stage_b_dir / "state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    if state.get("status") == "running":
        # Distilling from a guidance the loop is still editing is the fault of the earlier system.
        raise dg.Failure(
            f"Stage-B run {state.get('run_id')!r} for mission {mission!r} has not finished: distillation runs only "
            f"after {STAGE_B_GUIDANCE} has converged; wait for (or resume) that materialization",
            metadata={"state": dg.MetadataValue.path(str(state_path)), "phase": str(state.get("phase"))},
        )
    if state.get("status") == "failed":
        raise dg.Failure(
            f"Stage-B run {state.get('run_id')!r} for mission {mission!r} failed ({state.get('error')}); "
            f"re-materialize {STAGE_B_GUIDANCE} before distilling",
            metadata={"state": dg.MetadataValue.path(str(state_path))},
        )
    convergence, refusal = stage_b_convergence(stage_b_dir, allow_unconverged)
    if refusal is not None:
        raise dg.Failure(refusal, metadata={k: v for k, v in convergence.items() if v is not None})
    try:
        guidance = load_guidance(stage_b_dir, which)
    except ValueError as e:
        raise dg.Failure(
            f"no {which!r} Stage-B guidance for mission {mission!r} under {stage_b_dir}: "
            f"{STAGE_B_GUIDANCE} must be materialized first ({e})",
            metadata={"expected_dir": dg.MetadataValue.path(str(stage_b_dir / "guidance"))},
        ) from e
    return records, guidance, stage_b_dir, convergence


def _source(
    stage_b_dir, run_id: str, guidance, records: list[dict], config: DistillConfig, teacher_fingerprint: str
) -> tuple[SourceChoice, list[dict], set[str]]:
    """(the source used, the selected answers when it is `selections`, the held-out test record ids)."""
    held_out = test_record_ids(iter_jsonl(stage_b_dir / "splits.jsonl"), run_id)
    requested = config.source
    if requested == "teacher":
        return choose_source("teacher", None, teacher_fingerprint), [], held_out
    try:
        rows = kept_epoch_rows(iter_jsonl(stage_b_dir / "selections.jsonl"), run_id, guidance)
    except ValueError:
        if requested == "selections":
            raise
        return (
            SourceChoice(
                "teacher", f"auto: no selections of guidance v{guidance.version} in Stage-B run {run_id!r}", None
            ),
            [],
            held_out,
        )
    choice = choose_source(
        requested, stage_b_model(rows), teacher_fingerprint, config.constrained, stage_b_constrained(rows)
    )
    if choice.source == "teacher":
        return choice, [], held_out
    return choice, selected_answers(rows, {r["record_id"]: r for r in records}), held_out


@mission_model_asset(
    name=DISTILL_CHATML,
    deps=[dg.AssetKey(STAGE_B_GUIDANCE)],
    automation_condition=RETRAIN_CONDITION,
    group_name="qc",
    kinds={"python"},
    description="Teacher answers under the converged guidance, kept only where they agree with the label, "
    "as chatml SFT rows (+ DPO pairs).",
)
def distill_chatml(
    context: dg.AssetExecutionContext, config: DistillAssetConfig, storage: StorageResource, teacher_llm: LLMResource
) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    distill_config = to_domain(config, DistillConfig)
    records, guidance, stage_b_dir, convergence = _load_inputs(
        storage, mission.name, distill_config.guidance, distill_config.allow_unconverged
    )
    out_dir = storage.asset_dir(DISTILL_CHATML, mission.name)
    try:
        llm = teacher_llm.get_llm()
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not load the teacher LLM: {e}", metadata={"backend": teacher_llm.backend}) from e
    try:
        source, selected, held_out = _source(
            stage_b_dir, convergence["stage_b_run_id"], guidance, records, distill_config, llm.fingerprint
        )
    except ValueError as e:
        raise dg.Failure(
            f"distill_chatml cannot take its answers from Stage-B run {convergence['stage_b_run_id']!r}: {e}",
            metadata={
                "source": distill_config.source,
                "stage_b_dir": dg.MetadataValue.path(str(stage_b_dir)),
                "teacher_fingerprint": llm.fingerprint,
            },
        ) from e
    try:
        result = run_distill(
            records,
            mission,
            guidance,
            llm,
            distill_config,
            out_dir,
            trajectory_rows=iter_jsonl(stage_b_dir / "trajectories.jsonl"),
            log=context.log.info,
            source=source,
            selected=selected,
            held_out=held_out,
        )
    except OSError as e:
        raise dg.Failure(
            f"distillation I/O failed for {mission.name}: {e}",
            metadata={"out_dir": dg.MetadataValue.path(str(out_dir))},
        ) from e
    if not convergence["stage_b_converged"]:
        context.log.warning(
            f"distilling under a Stage-B run that did not converge "
            f"({convergence['stage_b_stop_reason']}), as allow_unconverged asks"
        )
    return dg.MaterializeResult(
        metadata={
            **_metadata(result, distill_config, teacher_llm.backend),
            **{f"distill/{k}": v for k, v in convergence.items() if v is not None},
        }
    )


def _reasons_table(result: DistillResult) -> str:
    return md_table(["reason", "answers"], [*result.rejected.items(), ("**kept**", result.kept_answers)])


def _preview(result: DistillResult) -> str:
    if not result.rows:
        return (
            "**empty corpus**: no teacher answer was well formed and agreed with its label "
            f"({result.n_answers} answers, see rejected.jsonl)"
        )
    lines = [
        f"- `{r['group_id']}` ({r['label']}) → {r['messages'][-1]['content'].replace(chr(10), ' / ')}"
        for r in result.rows[:5]
    ]
    return "\n".join(lines)[:480]


def _metadata(result: DistillResult, config: DistillConfig, backend: str) -> dict:
    t = result.teacher_run
    counts = result.label_counts
    paths = {f"path/{k}": dg.MetadataValue.path(str(v)) for k, v in result.paths.items()}
    return {
        "dagster/row_count": len(result.rows),
        "mission": result.mission,
        "guidance_version": result.guidance_version,
        "guidance_hash": result.guidance_hash,
        "teacher_fingerprint": result.teacher,
        "teacher_backend": backend,
        "seed": config.seed,
        "constrained_decoding": config.constrained,
        "preview": dg.MetadataValue.md(_preview(result)),
        "rejected_by_reason": dg.MetadataValue.md(_reasons_table(result)),
        "distill/groups": result.n_groups,
        "distill/answers": result.n_answers,
        "distill/kept_answers": result.kept_answers,
        "distill/keep_rate": result.keep_rate,
        "distill/rows": len(result.rows),
        "distill/rows_pass": counts["pass"],
        "distill/rows_fail": counts["fail"],
        **{f"distill/rejected_{reason}": n for reason, n in result.rejected.items()},
        "distill/preference_pairs": result.n_pairs,
        "distill/hard_groups": result.hard_groups,
        "distill/majority_wrong_groups": result.majority_wrong_groups,
        "distill/source": result.source.source,
        "distill/source_reason": result.source.reason,
        "distill/stage_b_model": result.source.stage_b_model or "unknown",
        "distill/teacher_calls_saved": result.teacher_calls_saved,
        "distill/held_out_test_records": result.held_out_records,
        "distill/teacher_calls": t.teacher_calls,
        "distill/cached_answers": t.cached,
        "distill/teacher_errors": t.failed,
        "distill/prompt_tokens": t.prompt_tokens,
        "distill/completion_tokens": t.completion_tokens,
        "config": dg.MetadataValue.json(config.to_dict()),
        **paths,
        **parquet_column_schema(result.paths["chatml_parquet"]),
    }


assets = [distill_chatml]
