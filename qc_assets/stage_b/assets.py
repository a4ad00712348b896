"""Dagster wiring for Stage-B: Stage-A records + LLM -> learned guidance, metrics and plots."""

import json

import dagster as dg
from pydantic import Field

from qc_assets.gpu_steps import GPU_OP_TAGS, GPU_POOL, MODEL_RETRY
from qc_assets.missions import get_mission
from qc_assets.partitions import mission_partitions
from qc_assets.plots import png_markdown
from qc_assets.stage_a.assets import load_stage_a_records
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.guidance import Guidance, GuidanceStore
from qc_assets.stage_b.loop import StageBResult, run_stage_b
from qc_assets.stage_b.report import epoch_table, plot_epochs
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import read_jsonl

ASSET_NAME = "stage_b_guidance"
UPSTREAM = "stage_a_summaries"
_D = StageBLoopConfig()


class StageBConfig(dg.Config):
    epochs: int = Field(default=_D.epochs, description="max epochs (stops earlier on convergence)")
    decode_grid: list[list[float]] = Field(default=[list(s) for s in _D.decode_grid],
                                           description="[[temperature, top_p], ...] rollout settings")
    samples: int = Field(default=_D.samples, description="samples per sampled decode setting")
    seed: int = Field(default=_D.seed, description="seeds split, rollouts, reflection and bootstrap")
    eval_fraction: float = Field(default=_D.eval_fraction, description="share of groups held out")
    min_relative_error_reduction: float = _D.min_relative_error_reduction
    max_changed_fraction: float = _D.max_changed_fraction
    min_bootstrap_prob: float = _D.min_bootstrap_prob
    false_release_tolerance: float = _D.false_release_tolerance
    max_eval_accuracy_drop: float = _D.max_eval_accuracy_drop
    bootstrap_samples: int = _D.bootstrap_samples
    max_new_tokens: int = _D.max_new_tokens
    constrained: bool = Field(default=_D.constrained, description="decode under the verdict contract")
    rollout_batch_size: int = _D.rollout_batch_size
    reflection_batch_size: int = _D.reflection_batch_size
    reflection_max_new_tokens: int = _D.reflection_max_new_tokens
    rounds_per_epoch: int = _D.rounds_per_epoch
    max_candidates_per_round: int = _D.max_candidates_per_round
    gate_chunk_size: int = _D.gate_chunk_size
    label_hint: bool = Field(default=False, description="show labels to the reflector (experiments only)")

    def to_loop_config(self) -> StageBLoopConfig:
        values = self.model_dump()
        values["decode_grid"] = tuple(tuple(s) for s in values["decode_grid"])
        for setting in values["decode_grid"]:
            if len(setting) != 2:
                raise ValueError(f"decode_grid entries must be [temperature, top_p], got {list(setting)}")
        return StageBLoopConfig(**values)


@dg.asset(
    name=ASSET_NAME,
    deps=[dg.AssetKey(UPSTREAM)],
    partitions_def=mission_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=MODEL_RETRY,
    group_name="qc",
    kinds={"python"},
    description="Guidance rules learned in prompt space by rollout, reflection and a statistical gate.",
)
def stage_b_guidance(context: dg.AssetExecutionContext, config: StageBConfig, storage: StorageResource,
                     llm: LLMResource) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    records = load_stage_a_records(storage, mission.name)
    loop_config = config.to_loop_config()
    out_dir = storage.asset_dir(ASSET_NAME, mission.name)
    try:
        model = llm.get_llm()
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not load the Stage-B LLM: {e}", metadata={"backend": llm.backend}) from e
    try:
        result = run_stage_b(records, mission, model, loop_config, out_dir, log=context.log.info)
    except OSError as e:
        raise dg.Failure(f"Stage-B I/O failed for {mission.name}: {e}",
                         metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}) from e
    return dg.MaterializeResult(metadata=_metadata(result, model.fingerprint, loop_config))


def _metadata(result: StageBResult, fingerprint: str, config: StageBLoopConfig) -> dict:
    rows = result.epochs
    plot = plot_epochs(rows, result.out_dir / f"metrics_{result.run_id}.png", f"Stage-B guidance, {result.run_id}")
    kept = result.kept_guidance
    stats = result.version_stats[kept.version]
    accepted = [r for r in read_jsonl(result.out_dir / "rule_candidates.jsonl")
                if r.get("run_id") == result.run_id and r.get("decision") in ("accepted", "rejected", "vetoed")]
    edits = "\n".join(f"- epoch {r['epoch']} {r['decision']}: {r['op']['op']} {r['op']['ids']} {r['op']['text'] or ''}"
                      for r in accepted[:20]) or "(no edit reached the gate)"
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
        "stage_b/train_accuracy": stats["train_accuracy"],
        "stage_b/eval_accuracy": stats["eval_accuracy"],
        "stage_b/baseline_eval_accuracy": result.baseline_eval_accuracy,
        "stage_b/format_ok_rate": stats["train_format_ok_rate"],
        "stage_b/accepted_edits": result.accepted_edits,
        "stage_b/rejected_edits": result.rejected_edits,
        "stage_b/epochs_run": len(rows),
        "stage_b/converged": result.converged,
        "stage_b/llm_calls": counts["llm_calls"],
        "stage_b/rollout_calls": counts["rollout_calls"],
        "stage_b/reflection_calls": counts["reflection_calls"],
        "stage_b/cached_calls": counts["cached"],
        "stage_b/prompt_tokens": counts["prompt_tokens"],
        "stage_b/completion_tokens": counts["completion_tokens"],
        "stage_b/train_records": result.n_train_records,
        "stage_b/eval_records": result.n_eval_records,
        "config": dg.MetadataValue.json(config.to_dict()),
    }


def _result(storage: StorageResource, mission: str) -> dict | None:
    path = storage.root() / ASSET_NAME / mission / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dg.asset_check(asset=stage_b_guidance, description="The kept guidance snapshot satisfies the guidance schema.")
def stage_b_guidance_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    store = GuidanceStore(storage.root() / ASSET_NAME / context.partition_key / "guidance")
    version = store.pointer("best")
    if version is None:
        return dg.AssetCheckResult(passed=False, metadata={"expected": "guidance/best.json", "actual": "missing"})
    try:
        guidance = Guidance.from_dict(store.snapshot(version)["guidance"])
    except (ValueError, KeyError, TypeError) as e:
        return dg.AssetCheckResult(passed=False, metadata={"version": version, "error": str(e)[:1000]})
    mission = get_mission(context.partition_key)
    scaffold = [it.text for it in guidance.items if it.id.startswith("S")]
    problems = []
    if guidance.get("G0").text != mission.focus:
        problems.append("G0 differs from the mission focus")
    if tuple(scaffold) != tuple(mission.scaffold_rules):
        problems.append("scaffold rules were changed")
    return dg.AssetCheckResult(passed=not problems, metadata={
        "version": version, "expected": "G0 = mission focus, S* = scaffold rules, ids unique and numeric",
        "actual": "; ".join(problems) or "ok", "rules": len(guidance.items)})


@dg.asset_check(asset=stage_b_guidance, blocking=True,
                description="Eval accuracy of the kept version is not below the initial (G0 + scaffold) guidance.")
def stage_b_not_worse_than_baseline(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                    ) -> dg.AssetCheckResult:
    result = _result(storage, context.partition_key)
    if result is None:
        return dg.AssetCheckResult(passed=False, metadata={"expected": "result.json", "actual": "missing"})
    kept, base = result["kept_eval_accuracy"], result["baseline_eval_accuracy"]
    return dg.AssetCheckResult(passed=kept >= base, metadata={
        "expected_min_eval_accuracy": base, "actual_eval_accuracy": kept, "kept_version": result["kept_version"]})


@dg.asset_check(asset=stage_b_guidance, description="The loop converged or stopped at max epochs.")
def stage_b_converged(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    result = _result(storage, context.partition_key)
    if result is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"expected": "result.json", "actual": "missing"})
    ok = result["converged"] or result["stopped_at_max_epochs"]
    return dg.AssetCheckResult(passed=ok, severity=dg.AssetCheckSeverity.WARN, metadata={
        "expected": "converged or stopped at max epochs", "converged": result["converged"],
        "stopped_at_max_epochs": result["stopped_at_max_epochs"], "epochs_run": result["epochs_run"]})


assets = [stage_b_guidance]
asset_checks = [stage_b_guidance_schema, stage_b_not_worse_than_baseline, stage_b_converged]
