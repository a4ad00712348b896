"""Dagster wiring for the production verdicts: inbox records + kept guidance + verdict model -> table."""

import json
from collections import Counter

import dagster as dg
import pandera.errors

from qc_assets.gpu_steps import mission_model_asset
from qc_assets.markdown import md_table
from qc_assets.missions import get_mission
from qc_assets.plots import png_markdown
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_a.assets import INBOX_ASSET, inbox_group_id_pattern, load_inbox_records
from qc_assets.stage_b.guidance import GuidanceStore
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.drift import drift_state
from qc_assets.verdicts.reviews import agreement_by_day, inbox_group_ids, plot_agreement
from qc_assets.verdicts.run import VerdictsResult, inbox_groups, run_verdicts
from qc_assets.verdicts.table import read_table, validate_verdicts, verdict_frame
from resources.llm import ChatLLM
from resources.llm.resource import LLMResource
from resources.vlm.resource import VLMResource
from resources.storage import StorageResource
from resources.store import read_jsonl

ASSET_NAME = "qc_verdicts"
GUIDANCE_ASSET = "stage_b_guidance"
STUDENT_ASSET = "fused_sft_checkpoint"

QCVerdictsConfig = dagster_config(VerdictConfig, "QCVerdictsConfig")


def verdict_model(config: VerdictConfig, llm: LLMResource, vlm: VLMResource, storage: StorageResource) -> ChatLLM:
    """The model that answers the Stage-B prompt: `llm` (the Stage-B LLM resource) or `student` (the
    promoted fused checkpoint, on the VLM's device and dtype, the same folder that serves Stage-A)."""
    if config.verdict_model == "student":
        from resources.training.student_chat import StudentChatLLM

        current = storage.root() / STUDENT_ASSET / "current"
        if not (current / "config.json").is_file():
            raise dg.Failure(f"verdict_model 'student' needs a promoted student at {current}: run student_job "
                             f"({STUDENT_ASSET}) until a run passes its eval gate",
                             metadata={"expected_path": dg.MetadataValue.path(str(current))})
        return StudentChatLLM(str(current), device=vlm.device, dtype=vlm.dtype, batch_size=config.batch_size)
    try:
        return llm.get_llm()
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not load the verdict LLM: {e}", metadata={"backend": llm.backend}) from e


def kept_guidance(storage: StorageResource, mission: str):
    store = GuidanceStore(storage.root() / GUIDANCE_ASSET / mission / "guidance")
    version = store.pointer("best")
    if version is None:
        raise dg.Failure(f"no kept guidance for mission {mission!r} under {store.root}: materialize "
                         f"{GUIDANCE_ASSET} for this partition first",
                         metadata={"expected_path": dg.MetadataValue.path(str(store.root / "best.json"))})
    return store.load(version)


@mission_model_asset(
    name=ASSET_NAME,
    deps=[dg.AssetKey(INBOX_ASSET), dg.AssetKey(GUIDANCE_ASSET)],
    # a new kept guidance (a re-learning) re-judges the inbox; samples are cached by guidance hash
    automation_condition=dg.AutomationCondition.eager().with_label("re-judge when the guidance or inbox changes"),
    group_name="qc",
    kinds={"python", "parquet"},
    description="Production verdict for every inbox group under the kept guidance (k samples, majority vote, "
                "fail wins ties); doubtful groups are marked needs_review, never passed silently.",
)
def qc_verdicts(context: dg.AssetExecutionContext, config: QCVerdictsConfig, storage: StorageResource,
                llm: LLMResource, vlm: VLMResource) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    cfg = to_domain(config, VerdictConfig)
    records = load_inbox_records(storage, mission.name)
    skipped = read_jsonl(storage.root() / INBOX_ASSET / mission.name / "skipped.jsonl")
    guidance = kept_guidance(storage, mission.name)
    pattern = inbox_group_id_pattern(storage, mission.name)
    if pattern is None:
        raise dg.Failure(f"{INBOX_ASSET} for {mission.name!r} has no run.json (made before group_id_pattern): "
                         f"re-materialize {INBOX_ASSET} for this partition",
                         metadata={"out_dir": dg.MetadataValue.path(str(storage.root() / INBOX_ASSET / mission.name))})
    model = verdict_model(cfg, llm, vlm, storage)
    out_dir = storage.asset_dir(ASSET_NAME, mission.name)
    try:
        result = run_verdicts(records, inbox_groups(records, skipped, pattern), mission, guidance, model, cfg,
                              out_dir, storage.images() / mission.name, log=context.log.info,
                              group_id_pattern=pattern)
    except OSError as e:
        raise dg.Failure(f"qc_verdicts I/O failed for {mission.name}: {e}",
                         metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}) from e
    return dg.MaterializeResult(metadata=_metadata(result, mission.name, guidance, model.fingerprint, cfg))


def _metadata(result: VerdictsResult, mission: str, guidance, fingerprint: str, cfg: VerdictConfig) -> dict:
    pending = result.pending
    verdicts = Counter(r["verdict"] or "null" for r in pending)
    review = sum(r["needs_review"] for r in pending)
    preview = md_table(["group", "verdict", "agree", "review"],
                       [(r["group_id"], r["verdict"] or "-", r["agreement"], (r["review_reason"] or "")[:40])
                        for r in pending[:6]])
    per_day = agreement_by_day(result.reviews)
    agreed = sum(bool(r["agrees"]) for r in result.reviews)
    meta = {
        "dagster/row_count": len(pending),
        "mission": mission,
        "model_fingerprint": fingerprint,
        "seed": cfg.seed,
        "guidance_version": guidance.version,
        "guidance_hash": guidance.content_hash(),
        "preview": dg.MetadataValue.md(_clip(preview, 500)),
        "verdicts/pass": verdicts["pass"],
        "verdicts/fail": verdicts["fail"],
        "verdicts/null": verdicts["null"],
        "verdicts/needs_review": review,
        "verdicts/needs_review_share": round(review / len(pending), 4) if pending else 0.0,
        "verdicts/newly_judged": result.newly_judged,
        "verdicts/rejudged": sum(result.rejudged.values()),
        "verdicts/changed": result.changed,
        "verdicts/unchanged": result.unchanged,
        "rejudged_reasons": dg.MetadataValue.md(md_table(["why re-judged", "groups"], sorted(result.rejudged.items()))),
        "verdicts/llm_calls": result.counts.llm_calls,
        "verdicts/cached_samples": result.counts.cached,
        "verdicts/failed_requests": result.counts.failed,
        "verdicts/reviews_new": result.new_reviews,
        "verdicts/reviews_total": len(result.reviews),
        "verdicts/reviewer_agreement": round(agreed / len(result.reviews), 4) if result.reviews else 0.0,
        "reviewer_agreement_by_day": dg.MetadataValue.md(md_table(
            ["day", "reviews", "agreed", "agreement", "cumulative"],
            [(d["day"], d["reviews"], d["agreed"], d["agreement"], d["cumulative_agreement"]) for d in per_day])),
        "verdicts_path": dg.MetadataValue.path(str(result.paths["parquet"])),
        "csv_path": dg.MetadataValue.path(str(result.paths["csv"])),
        "config": dg.MetadataValue.json(cfg.to_dict()),
    }
    if per_day:
        # an ASCII title: the default matplotlib font has no CJK glyphs; the mission is in the metadata
        png = plot_agreement(per_day, "production verdicts: agreement with reviewers")
        meta["reviewer_agreement_plot"] = dg.MetadataValue.md(png_markdown(png, "agreement with reviewers"))
    return meta


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(storage: StorageResource, mission: str) -> dict | None:
    path = storage.root() / ASSET_NAME / mission / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dg.asset_check(asset=qc_verdicts, blocking=True, description="The verdict table satisfies its contract (pandera).")
def qc_verdicts_schema(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    return verdicts_schema(storage, context.partition_key)


def verdicts_schema(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    rows = read_table(storage.root() / ASSET_NAME / mission)
    try:
        validate_verdicts(verdict_frame(rows))
    except pandera.errors.SchemaErrors as e:
        return dg.AssetCheckResult(passed=False, metadata={
            "rows": len(rows), "failures": len(e.failure_cases),
            "errors": dg.MetadataValue.md(f"```\n{str(e)[:3000]}\n```")})
    return dg.AssetCheckResult(passed=True, metadata={"rows": len(rows), "expected": "every row valid"})


@dg.asset_check(asset=qc_verdicts, blocking=True,
                description="Every group waiting in the inbox has exactly one pending verdict row, and no other.")
def qc_verdicts_one_row_per_inbox_group(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                        ) -> dg.AssetCheckResult:
    return one_row_per_inbox_group(storage, context.partition_key)


def one_row_per_inbox_group(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    rows = [r for r in read_table(storage.root() / ASSET_NAME / mission) if r["status"] == "pending"]
    pattern = inbox_group_id_pattern(storage, mission)
    if pattern is None:
        return dg.AssetCheckResult(passed=False, metadata={
            "expected": f"{INBOX_ASSET}/{mission}/run.json (its group_id_pattern)", "actual": "missing"})
    waiting = set(inbox_group_ids(storage.images(), mission, pattern))
    counts = Counter(r["group_id"] for r in rows)
    missing = sorted(waiting - set(counts))
    duplicated = sorted(g for g, n in counts.items() if n > 1)
    extra = sorted(set(counts) - waiting)
    return dg.AssetCheckResult(passed=not (missing or duplicated or extra), metadata={
        "inbox_groups": len(waiting), "pending_rows": len(rows), "expected": "one pending row per inbox group",
        "missing": ", ".join(missing[:10]), "duplicated": ", ".join(duplicated[:10]),
        "not_in_inbox": ", ".join(extra[:10])})


@dg.asset_check(asset=qc_verdicts, description="Share of inbox groups that need review is at most the configured "
                                               "max_needs_review_share (a warning: the model or guidance struggles).")
def qc_verdicts_needs_review_share(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                   ) -> dg.AssetCheckResult:
    return needs_review_share(storage, context.partition_key)


def needs_review_share(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    summary = _summary(storage, mission)
    if summary is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"expected": "summary.json", "actual": "missing"})
    rows = [r for r in read_table(storage.root() / ASSET_NAME / mission) if r["status"] == "pending"]
    share = sum(r["needs_review"] for r in rows) / len(rows) if rows else 0.0
    limit = summary["max_needs_review_share"]
    return dg.AssetCheckResult(passed=share <= limit, severity=dg.AssetCheckSeverity.WARN, metadata={
        "expected_max_share": limit, "actual_share": round(share, 4), "pending_rows": len(rows)})


def stage_b_result(storage: StorageResource, mission: str) -> dict | None:
    """The latest Stage-B run's result.json (kept version, its test numbers), or None before the first."""
    path = storage.root() / GUIDANCE_ASSET / mission / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def mission_drift(storage: StorageResource, mission: str) -> dict | None:
    """The drift state of a mission's production verdicts (drift.py), or None before its first run."""
    summary = _summary(storage, mission)
    if summary is None:
        return None
    config = VerdictConfig(**summary["config"])
    reviews = read_jsonl(storage.root() / ASSET_NAME / mission / "reviews.jsonl")
    return {**drift_state(reviews, stage_b_result(storage, mission), config.drift_settings()),
            "severity": config.drift_severity}


@dg.asset_check(asset=qc_verdicts, description="Agreement with reviewers over the recent window holds up against "
                                               "what the kept guidance showed on Stage-B's test split (drift watch).")
def qc_verdicts_agreement_holds(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                ) -> dg.AssetCheckResult:
    return agreement_holds(storage, context.partition_key)


def agreement_holds(storage: StorageResource, mission: str) -> dg.AssetCheckResult:
    state = mission_drift(storage, mission)
    if state is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"expected": "summary.json", "actual": "missing"})
    low, high = state["interval"]
    flagged = state["needs_review_in_window"]
    metadata = {
        "status": state["status"], "window_reviews": state["window_reviews"],
        "agreement": state["agreement"], "interval_low": low, "interval_high": high,
        "interval_method": state["interval_method"], "baseline": state["baseline"],
        "baseline_source": state["baseline_source"], "drift_margin": state["drift_margin"],
        "needs_review_overturned_share": round(state["needs_review_overturned"] / flagged, 4) if flagged else None,
        "needs_review_confirmed_share": round(state["needs_review_confirmed"] / flagged, 4) if flagged else None,
        "recent_disagreements": dg.MetadataValue.md(md_table(
            ["group", "machine", "reviewer", "reason"],
            [(d["group_id"], d["machine"] or "-", d["reviewer"], (d["reason"] or "")[:40])
             for d in state["recent_disagreements"]])),
    }
    return dg.AssetCheckResult(passed=not state["drifted"], severity=dg.AssetCheckSeverity[state["severity"]],
                               metadata=metadata)


assets = [qc_verdicts]
asset_checks = [qc_verdicts_schema, qc_verdicts_one_row_per_inbox_group, qc_verdicts_needs_review_share,
                qc_verdicts_agreement_holds]
