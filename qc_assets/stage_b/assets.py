"""Dagster wiring for Stage-B: Stage-A records + LLM -> learned guidance, metrics and plots (its checks:
checks.py)."""

from dataclasses import replace

import dagster as dg

from qc_assets.asset_names import STAGE_A_SUMMARIES, STAGE_B_GUIDANCE
from qc_assets.gpu_steps import mission_model_asset
from qc_assets.markdown import md_table
from qc_assets.missions import get_mission
from qc_assets.plots import png_markdown
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_a.assets import load_stage_a_records
from qc_assets.stage_a.gt_reasons import GT_FIELD, top_gt_reasons
from qc_assets.stage_b.automation import RELEARN_CONDITION, due_reason
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.loop import ProviderFailureError, StageBResult, run_stage_b
from qc_assets.stage_b.relearn import REASON_TAG, TRIGGER_TAG, RelearnSettings, record_relearn
from qc_assets.stage_b.report import epoch_table, plot_epochs
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import read_jsonl

# The run config is derived from the one Stage-B config class; its fields, defaults and help live there.
StageBConfig = dagster_config(StageBLoopConfig, "StageBConfig")


@mission_model_asset(
    name=STAGE_B_GUIDANCE,
    deps=[dg.AssetKey(STAGE_A_SUMMARIES)],
    group_name="qc",
    kinds={"python"},
    automation_condition=RELEARN_CONDITION,
    description="Guidance rules learned in prompt space by rollout, reflection and a statistical gate.",
)
def stage_b_guidance(
    context: dg.AssetExecutionContext, config: StageBConfig, storage: StorageResource, llm: LLMResource
) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    records = load_stage_a_records(storage, mission.name)
    loop_config = to_domain(config, StageBLoopConfig)
    out_dir = storage.asset_dir(STAGE_B_GUIDANCE, mission.name)
    relearn = _relearn(context, storage, mission.name)
    if relearn is not None:
        loop_config = replace(loop_config, start_from="kept")
    try:
        model = llm.get_llm()
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not load the Stage-B LLM: {e}", metadata={"backend": llm.backend}) from e
    try:
        result = run_stage_b(records, mission, model, loop_config, out_dir, log=context.log.info)
    except ProviderFailureError as e:
        raise dg.Failure(
            str(e),
            metadata={
                **{f"stage_b/{k}": v for k, v in e.counts.items()},
                "stage_b/failed_call_rate": e.rate,
                "max_provider_failure_rate": loop_config.max_provider_failure_rate,
                "backend": llm.backend,
                "model_fingerprint": model.fingerprint,
            },
        ) from e
    except OSError as e:
        raise dg.Failure(
            f"Stage-B I/O failed for {mission.name}: {e}", metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}
        ) from e
    meta = {**_metadata(result, model.fingerprint, loop_config), **gt_reason_metadata(records)}
    if relearn is not None:
        meta.update(
            {
                "relearn/reason": relearn,
                "relearn/from_version": result.baseline_version,
                "relearn/live_version": result.kept_version,
                "relearn/refused_version": result.test.get("refused_version") or "none",
            }
        )
    return dg.MaterializeResult(metadata=meta)


def _relearn(context: dg.AssetExecutionContext, storage: StorageResource, mission: str) -> str | None:
    """For a run the relearn automation launched: why (tagged on the run and logged for the cooldown)."""
    if TRIGGER_TAG not in context.run.tags:
        return None
    reason = due_reason(storage, mission, RelearnSettings.from_env()) or "requested with the relearn tag"
    context.instance.add_run_tags(context.run_id, {REASON_TAG: reason.split(":", 1)[0]})
    record_relearn(storage.asset_dir(STAGE_B_GUIDANCE, mission), context.run_id, reason)
    context.log.info(f"automatic re-learning of {mission}: {reason}")
    return reason


def gt_reason_metadata(records: list[dict]) -> dict:
    """The reviewers' most frequent fail reasons for this mission (only when Stage-A attached them)."""
    top = top_gt_reasons(records)
    if not top:
        return {}
    return {
        "stage_b/fail_groups_with_gt_reason": sum(1 for r in records if r.get(GT_FIELD)),
        "gt_fail_reasons_top": dg.MetadataValue.md(md_table(["ground-truth fail reason", "groups"], top)),
    }


def _test_metadata(test: dict) -> dict:
    """Test numbers only where the test side is big enough to conclude; otherwise the reason why not."""
    meta = {
        "stage_b/test_groups": test["n_groups"],
        "stage_b/test_conclusive": test["conclusive"],
        "stage_b/test_verdict": test["verdict"],
    }
    if not test["conclusive"]:
        return {**meta, "test_note": test["note"]}
    return {
        **meta,
        "stage_b/test_baseline_accuracy": test["baseline_accuracy"],
        "stage_b/test_kept_accuracy": test["kept_accuracy"],
        "stage_b/test_difference": test["difference"],
        "stage_b/test_ci_low": test["ci_low"],
        "stage_b/test_ci_high": test["ci_high"],
        "stage_b/test_level": test["level"],
    }


def _metadata(result: StageBResult, fingerprint: str, config: StageBLoopConfig) -> dict:
    rows = result.epochs
    plot = plot_epochs(rows, result.out_dir / f"metrics_{result.run_id}.png", f"Stage-B guidance, {result.run_id}")
    kept = result.kept_guidance
    stats = result.version_stats[kept.version]
    decided = [
        r
        for r in read_jsonl(result.out_dir / "rule_candidates.jsonl")
        if r.get("run_id") == result.run_id and r.get("decision") in ("accepted", "rejected", "vetoed")
    ]
    edits = (
        "\n".join(
            f"- epoch {r['epoch']} {r['decision']}: {r['op']['op']} {r['op']['ids']} {r['op']['text'] or ''}"
            for r in decided[:20]
        )
        or "(no edit reached the gate)"
    )
    preview = "\n".join(f"[{it.id}] {it.text}" for it in kept.items)[:480]
    counts = result.counts
    return {
        "dagster/row_count": len(kept.items),
        "mission": result.mission,
        "model_fingerprint": fingerprint,
        "seed": config.seed,
        "run_id": result.run_id,
        "preview": dg.MetadataValue.md(f"```\n{preview}\n```"),
        "guidance": dg.MetadataValue.md(kept.to_markdown()),
        "epochs": dg.MetadataValue.md(epoch_table(rows)),
        "accuracy_plot": dg.MetadataValue.md(png_markdown(plot.read_bytes(), "per-epoch accuracy")),
        "accuracy_plot_path": dg.MetadataValue.path(str(plot)),
        "edits": dg.MetadataValue.md(edits),
        "stage_b/kept_version": kept.version,
        "stage_b/baseline_version": result.baseline_version,
        "stage_b/train_accuracy": stats["train_accuracy"],
        "stage_b/selection_accuracy": stats["selection_accuracy"],
        "stage_b/baseline_selection_accuracy": result.baseline_selection_accuracy,
        "stage_b/format_ok_rate": stats["train_format_ok_rate"],
        **_test_metadata(result.test),
        "stage_b/accepted_edits": result.accepted_edits,
        "stage_b/rejected_edits": result.rejected_edits,
        "stage_b/gated_candidates": result.gated_candidates,
        "stage_b/epochs_run": len(rows),
        "stage_b/stop_reason": result.stop_reason,
        "stage_b/converged": result.converged,
        "stage_b/llm_calls": counts["llm_calls"],
        "stage_b/rollout_calls": counts["rollout_calls"],
        "stage_b/reflection_calls": counts["reflection_calls"],
        "stage_b/failed_calls": counts["failed_calls"],
        "stage_b/failed_rollout_calls": counts["failed_rollout_calls"],
        "stage_b/failed_reflection_calls": counts["failed_reflection_calls"],
        "stage_b/failed_call_rate": counts["failed_calls"] / counts["llm_calls"] if counts["llm_calls"] else 0.0,
        "stage_b/cached_calls": counts["cached"],
        "stage_b/retries": counts["retries"],
        "stage_b/prompt_tokens": counts["prompt_tokens"],
        "stage_b/completion_tokens": counts["completion_tokens"],
        **{f"stage_b/{k}": v for k, v in result.split_sizes.items()},
        "config": dg.MetadataValue.json(config.to_dict()),
    }


assets = [stage_b_guidance]
