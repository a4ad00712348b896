"""Dagster wiring for the production verdicts: inbox records + kept guidance + verdict model -> table
(its checks: checks.py; the inbox summaries it reads: inbox.py)."""

import json
from collections import Counter

import dagster as dg

from qc_assets.asset_names import FUSED_SFT_CHECKPOINT, INBOX_SUMMARIES, QC_VERDICTS, STAGE_B_GUIDANCE
from qc_assets.gpu_steps import mission_model_asset
from qc_assets.markdown import md_table
from qc_assets.metadata import parquet_column_schema
from qc_assets.missions import get_mission
from qc_assets.plots import png_markdown
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_b.guidance import GuidanceStore
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.drift import drift_state
from qc_assets.verdicts.inbox import inbox_group_id_pattern, load_inbox_records
from qc_assets.verdicts.reviews import agreement_by_day, plot_agreement
from qc_assets.verdicts.run import VerdictsResult, inbox_groups, run_verdicts
from resources.llm import ChatLLM
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import read_jsonl
from resources.vlm.resource import VLMResource

QCVerdictsConfig = dagster_config(VerdictConfig, "QCVerdictsConfig")


def verdict_model(config: VerdictConfig, llm: LLMResource, vlm: VLMResource, storage: StorageResource) -> ChatLLM:
    """The model that answers the Stage-B prompt: `llm` (the Stage-B LLM resource) or `student` (the
    promoted fused checkpoint, on the VLM's device and dtype, the same folder that serves Stage-A)."""
    if config.verdict_model == "student":
        from resources.training.student_chat import StudentChatLLM

        current = storage.root() / FUSED_SFT_CHECKPOINT / "current"
        if not (current / "config.json").is_file():
            raise dg.Failure(
                f"verdict_model 'student' needs a promoted student at {current}: run student_job "
                f"({FUSED_SFT_CHECKPOINT}) until a run passes its eval gate",
                metadata={"expected_path": dg.MetadataValue.path(str(current))},
            )
        return StudentChatLLM(str(current), device=vlm.device, dtype=vlm.dtype, batch_size=config.batch_size)
    try:
        return llm.get_llm()
    except (OSError, ValueError) as e:
        raise dg.Failure(f"could not load the verdict LLM: {e}", metadata={"backend": llm.backend}) from e


def kept_guidance(storage: StorageResource, mission: str):
    store = GuidanceStore(storage.root() / STAGE_B_GUIDANCE / mission / "guidance")
    version = store.pointer("best")
    if version is None:
        raise dg.Failure(
            f"no kept guidance for mission {mission!r} under {store.root}: materialize "
            f"{STAGE_B_GUIDANCE} for this partition first",
            metadata={"expected_path": dg.MetadataValue.path(str(store.root / "best.json"))},
        )
    return store.load(version)


@mission_model_asset(
    name=QC_VERDICTS,
    deps=[dg.AssetKey(INBOX_SUMMARIES), dg.AssetKey(STAGE_B_GUIDANCE)],
    # a new kept guidance (a re-learning) re-judges the inbox; samples are cached by guidance hash
    automation_condition=dg.AutomationCondition.eager().with_label("re-judge when the guidance or inbox changes"),
    group_name="qc",
    kinds={"python", "parquet"},
    description="Production verdict for every inbox group under the kept guidance (k samples, majority vote, "
    "fail wins ties); doubtful groups are marked needs_review, never passed silently.",
)
def qc_verdicts(
    context: dg.AssetExecutionContext,
    config: QCVerdictsConfig,
    storage: StorageResource,
    llm: LLMResource,
    vlm: VLMResource,
) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    cfg = to_domain(config, VerdictConfig)
    records = load_inbox_records(storage, mission.name)
    skipped = read_jsonl(storage.root() / INBOX_SUMMARIES / mission.name / "skipped.jsonl")
    guidance = kept_guidance(storage, mission.name)
    pattern = inbox_group_id_pattern(storage, mission.name)
    if pattern is None:
        raise dg.Failure(
            f"{INBOX_SUMMARIES} for {mission.name!r} has no run.json (made before group_id_pattern): "
            f"re-materialize {INBOX_SUMMARIES} for this partition",
            metadata={"out_dir": dg.MetadataValue.path(str(storage.root() / INBOX_SUMMARIES / mission.name))},
        )
    model = verdict_model(cfg, llm, vlm, storage)
    out_dir = storage.asset_dir(QC_VERDICTS, mission.name)
    try:
        result = run_verdicts(
            records,
            inbox_groups(records, skipped, pattern),
            mission,
            guidance,
            model,
            cfg,
            out_dir,
            storage.images() / mission.name,
            log=context.log.info,
            group_id_pattern=pattern,
        )
    except OSError as e:
        raise dg.Failure(
            f"{QC_VERDICTS} I/O failed for {mission.name}: {e}",
            metadata={"out_dir": dg.MetadataValue.path(str(out_dir))},
        ) from e
    return dg.MaterializeResult(metadata=_metadata(result, mission.name, guidance, model.fingerprint, cfg))


def _metadata(result: VerdictsResult, mission: str, guidance, fingerprint: str, cfg: VerdictConfig) -> dict:
    pending = result.pending
    verdicts = Counter(r["verdict"] or "null" for r in pending)
    review = sum(r["needs_review"] for r in pending)
    preview = md_table(
        ["group", "verdict", "agree", "review"],
        [(r["group_id"], r["verdict"] or "-", r["agreement"], (r["review_reason"] or "")[:40]) for r in pending[:6]],
    )
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
        "reviewer_agreement_by_day": dg.MetadataValue.md(
            md_table(
                ["day", "reviews", "agreed", "agreement", "cumulative"],
                [(d["day"], d["reviews"], d["agreed"], d["agreement"], d["cumulative_agreement"]) for d in per_day],
            )
        ),
        "verdicts_path": dg.MetadataValue.path(str(result.paths["parquet"])),
        **parquet_column_schema(result.paths["parquet"]),
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


def read_summary(storage: StorageResource, mission: str) -> dict | None:
    path = storage.root() / QC_VERDICTS / mission / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def stage_b_result(storage: StorageResource, mission: str) -> dict | None:
    """The latest Stage-B run's result.json (kept version, its test numbers), or None before the first."""
    path = storage.root() / STAGE_B_GUIDANCE / mission / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def mission_drift(storage: StorageResource, mission: str) -> dict | None:
    """The drift state of a mission's production verdicts (drift.py), or None before its first run."""
    summary = read_summary(storage, mission)
    if summary is None:
        return None
    config = VerdictConfig(**summary["config"])
    reviews = read_jsonl(storage.root() / QC_VERDICTS / mission / "reviews.jsonl")
    return {
        **drift_state(reviews, stage_b_result(storage, mission), config.drift_settings()),
        "severity": config.drift_severity,
    }


assets = [qc_verdicts]
