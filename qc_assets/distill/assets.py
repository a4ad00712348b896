"""Dagster wiring for teacher distillation: converged Stage-B guidance + teacher LLM -> chatml corpus."""

import json

import dagster as dg
import polars as pl
from pandera.errors import SchemaError, SchemaErrors
from pydantic import Field

from qc_assets.distill.config import DistillConfig
from qc_assets.distill.export import CHATML_PARQUET
from qc_assets.distill.pipeline import DistillResult, run_distill
from qc_assets.distill.schema import validate_frame
from qc_assets.gpu_steps import GPU_OP_TAGS, GPU_POOL, MODEL_RETRY
from qc_assets.markdown import md_table
from qc_assets.missions import get_mission
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import load_stage_a_records
from qc_assets.stage_b.guidance import load_guidance
from qc_assets.stage_b.verdict import parse_verdict
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import iter_jsonl, read_jsonl

ASSET_NAME = "distill_chatml"
STAGE_B = "stage_b_guidance"
_D = DistillConfig()


class DistillAssetConfig(dg.Config):
    n_samples: int = Field(default=_D.n_samples, description="teacher samples per group")
    temperature: float = Field(default=_D.temperature, description="teacher sampling temperature")
    top_p: float = Field(default=_D.top_p, description="teacher nucleus sampling mass")
    max_new_tokens: int = Field(default=_D.max_new_tokens, description="teacher completion budget")
    seed: int = Field(default=_D.seed, description="base seed; each sample index derives its own seed")
    constrained: bool = Field(default=_D.constrained, description="decode under the verdict contract (regex)")
    guidance: str = Field(default=_D.guidance, description="Stage-B guidance pointer: best | current")
    batch_size: int = Field(default=_D.batch_size, description="conversations per llm.chat call")
    short_rationale: bool = Field(default=_D.short_rationale, description="recipe: rationale length budget")
    max_reason_chars: int = Field(default=_D.max_reason_chars, description="rationale budget in characters")
    multi_sample: bool = Field(default=_D.multi_sample, description="recipe: keep every distinct accepted sample")
    preference_pairs: bool = Field(default=_D.preference_pairs, description="recipe: export DPO pairs")
    hard_case_factor: int = Field(default=_D.hard_case_factor, description="copies of a hard group's rows")
    hard_fail_groups: bool = Field(default=_D.hard_fail_groups, description="fail groups are hard")
    hard_majority_wrong: bool = Field(default=_D.hard_majority_wrong, description="Stage-B majority-wrong are hard")
    min_label_share: float = Field(default=_D.min_label_share, description="balance check: min share per label")

    def to_distill_config(self) -> DistillConfig:
        return DistillConfig(**self.model_dump())


def _load_inputs(storage: StorageResource, mission: str, which: str):
    records = load_stage_a_records(storage, mission)
    stage_b_dir = storage.root() / STAGE_B / mission
    state_path = stage_b_dir / "state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    if state.get("status") == "running":
        # Distilling from a guidance the loop is still editing is the fault of the earlier system.
        raise dg.Failure(
            f"Stage-B run {state.get('run_id')!r} for mission {mission!r} has not finished: distillation runs only "
            f"after {STAGE_B} has converged; wait for (or resume) that materialization",
            metadata={"state": dg.MetadataValue.path(str(state_path)), "phase": str(state.get("phase"))})
    try:
        guidance = load_guidance(stage_b_dir, which)
    except ValueError as e:
        raise dg.Failure(
            f"no {which!r} Stage-B guidance for mission {mission!r} under {stage_b_dir}: "
            f"{STAGE_B} must be materialized first ({e})",
            metadata={"expected_dir": dg.MetadataValue.path(str(stage_b_dir / "guidance"))}) from e
    return records, guidance, stage_b_dir / "trajectories.jsonl"


@dg.asset(
    name=ASSET_NAME,
    deps=[dg.AssetKey(STAGE_B)],
    partitions_def=mission_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=MODEL_RETRY,
    group_name="qc",
    kinds={"python"},
    description="Teacher answers under the converged guidance, kept only where they agree with the label, "
                "as chatml SFT rows (+ DPO pairs).",
)
def distill_chatml(context: dg.AssetExecutionContext, config: DistillAssetConfig, storage: StorageResource,
                   teacher_llm: LLMResource) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    distill_config = config.to_distill_config()
    records, guidance, trajectories = _load_inputs(storage, mission.name, distill_config.guidance)
    out_dir = storage.asset_dir(ASSET_NAME, mission.name)
    try:
        llm = teacher_llm.get_llm()
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not load the teacher LLM: {e}", metadata={"backend": teacher_llm.backend}) from e
    try:
        result = run_distill(records, mission, guidance, llm, distill_config, out_dir,
                             trajectory_rows=iter_jsonl(trajectories), log=context.log.info)
    except OSError as e:
        raise dg.Failure(f"distillation I/O failed for {mission.name}: {e}",
                         metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}) from e
    return dg.MaterializeResult(metadata=_metadata(result, distill_config, teacher_llm.backend))


def _reasons_table(result: DistillResult) -> str:
    return md_table(["reason", "answers"], [*result.rejected.items(), ("**kept**", result.kept_answers)])


def _preview(result: DistillResult) -> str:
    if not result.rows:
        return ("**empty corpus**: no teacher answer was well formed and agreed with its label "
                f"({result.n_answers} answers, see rejected.jsonl)")
    lines = [f"- `{r['group_id']}` ({r['label']}) → {r['messages'][-1]['content'].replace(chr(10), ' / ')}"
             for r in result.rows[:5]]
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
        "distill/teacher_calls": t.teacher_calls,
        "distill/cached_answers": t.cached,
        "distill/teacher_errors": t.failed,
        "distill/prompt_tokens": t.prompt_tokens,
        "distill/completion_tokens": t.completion_tokens,
        "config": dg.MetadataValue.json(config.to_dict()),
        **paths,
    }


def _read_corpus(storage: StorageResource, mission: str) -> pl.DataFrame | None:
    path = storage.root() / ASSET_NAME / mission / CHATML_PARQUET
    return pl.read_parquet(path) if path.exists() else None


def _missing(path_hint: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, metadata={"expected": path_hint, "actual": "missing"})


@dg.asset_check(asset=distill_chatml, blocking=True,
                description="Every row satisfies the distill_chatml contract (pandera schema).")
def distill_chatml_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    try:
        validate_frame(frame)
    except (SchemaErrors, SchemaError) as e:
        return dg.AssetCheckResult(passed=False, metadata={
            "expected": "rows satisfy the distill_chatml/v1 schema", "rows": frame.height, "errors": str(e)[:2000]})
    return dg.AssetCheckResult(passed=True, metadata={
        "expected": "rows satisfy the distill_chatml/v1 schema", "actual": "ok", "rows": frame.height})


@dg.asset_check(asset=distill_chatml, description="Every assistant verdict equals the group's label (100%).")
def distill_chatml_label_agreement(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                   ) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    agree = sum(parse_verdict(m[-1]["content"]).verdict == label
                for m, label in frame.select("messages", "label").iter_rows())
    rate = agree / frame.height if frame.height else None
    return dg.AssetCheckResult(passed=agree == frame.height, metadata={
        "expected_agreement": 1.0, "actual_agreement": rate, "rows": frame.height,
        "disagreeing_rows": frame.height - agree,
        "note": "empty corpus: nothing to disagree" if frame.height == 0 else ""})


@dg.asset_check(asset=distill_chatml, description="Each label's share of rows is within the configured band.")
def distill_chatml_label_balance(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                 ) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    summary_path = storage.root() / ASSET_NAME / context.partition_key / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    band = float(summary.get("config", {}).get("min_label_share", _D.min_label_share))
    counts = {label: frame.filter(pl.col("label") == label).height for label in ("pass", "fail")}
    if frame.height == 0:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={
            "expected_min_share": band, "actual": "empty corpus: no row kept, balance undefined",
            "rows_pass": 0, "rows_fail": 0})
    shares = {label: n / frame.height for label, n in counts.items()}
    return dg.AssetCheckResult(passed=min(shares.values()) >= band, severity=dg.AssetCheckSeverity.WARN, metadata={
        "expected_min_share": band, "actual_pass_share": shares["pass"], "actual_fail_share": shares["fail"],
        "rows_pass": counts["pass"], "rows_fail": counts["fail"]})


@dg.asset_check(asset=distill_chatml, description="No duplicate (group_id, record_id, sample, copy) rows.")
def distill_chatml_unique_rows(context: dg.AssetCheckExecutionContext, storage: StorageResource
                               ) -> dg.AssetCheckResult:
    frame = _read_corpus(storage, context.partition_key)
    if frame is None:
        return _missing(CHATML_PARQUET)
    key = ["group_id", "record_id", "sample", "copy"]
    dupes = frame.height - frame.select(key).unique().height
    return dg.AssetCheckResult(passed=dupes == 0, metadata={
        "key": ", ".join(key), "expected_duplicates": 0, "actual_duplicates": dupes, "rows": frame.height})


assets = [distill_chatml]
asset_checks = [distill_chatml_schema, distill_chatml_label_agreement, distill_chatml_label_balance,
                distill_chatml_unique_rows]
