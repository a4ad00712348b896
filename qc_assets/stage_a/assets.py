"""Dagster wiring for Stage-A: config + resources -> `run_stage_a` -> files + metadata."""


import json
from collections import Counter

import dagster as dg

from qc_assets.gpu_steps import GPU_OP_TAGS, GPU_POOL, MODEL_RETRY
from qc_assets.markdown import md_table
from qc_assets.missions import get_mission
from qc_assets.partitions import mission_partitions
from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_a.discovery import INBOX_FOLDER
from qc_assets.plots import png_markdown
from qc_assets.stage_a.gt_reasons import top_gt_reasons
from qc_assets.stage_a.lengths import plot_answer_lengths
from qc_assets.stage_a.postprocess import RULES as POSTPROCESS_RULES
from qc_assets.stage_a.runner import PRODUCTION_MAX_NEW_TOKENS, StageAConfig, StageAResult, run_stage_a
from resources.store import read_jsonl
from resources.storage import StorageResource
from resources.vlm import VLMRequestError
from resources.vlm.resource import VLMResource

ASSET_NAME = "stage_a_summaries"
INBOX_ASSET = "inbox_summaries"


StageASummariesConfig = dagster_config(StageAConfig, "StageASummariesConfig")
# The inbox uses the same settings (same defaults), so its summaries read like the ones the guidance
# was learned on; it is never capped: every submission gets a verdict.
InboxSummariesConfig = dagster_config(StageAConfig, "InboxSummariesConfig")


@dg.asset(
    name=ASSET_NAME,
    partitions_def=mission_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=MODEL_RETRY,
    group_name="qc",
    kinds={"pytorch", "transformers"},
    description="One-line Chinese VLM summary of every photo of a mission, one record per group occurrence.",
)
def stage_a_summaries(
    context: dg.AssetExecutionContext, config: StageASummariesConfig, storage: StorageResource, vlm: VLMResource
) -> dg.MaterializeResult:
    run_config = to_domain(config, StageAConfig)
    return _summarise(context, storage, vlm, run_config, ASSET_NAME, inbox=False)


@dg.asset(
    name=INBOX_ASSET,
    partitions_def=mission_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    retry_policy=MODEL_RETRY,
    group_name="qc",
    kinds={"pytorch", "transformers"},
    description=f"Stage-A summaries of the unlabelled groups under <mission>/{INBOX_FOLDER}/ (label null); "
                "read only by qc_verdicts, never by a training asset.",
)
def inbox_summaries(
    context: dg.AssetExecutionContext, config: InboxSummariesConfig, storage: StorageResource, vlm: VLMResource
) -> dg.MaterializeResult:
    run_config = to_domain(config, StageAConfig)
    if run_config.pass_cap is not None or run_config.fail_cap is not None:
        raise ValueError(f"{INBOX_ASSET} is never capped (every submission gets a verdict): leave pass_cap and "
                         f"fail_cap unset, got {run_config.pass_cap} / {run_config.fail_cap}")
    return _summarise(context, storage, vlm, run_config, INBOX_ASSET, inbox=True)


def _summarise(context, storage: StorageResource, vlm: VLMResource, run_config: StageAConfig, asset: str,
               inbox: bool) -> dg.MaterializeResult:
    mission = get_mission(context.partition_key)
    out_dir = storage.asset_dir(asset, mission.name)
    model = vlm.get_vlm()
    try:
        result = run_stage_a(storage.images(), mission, model, run_config, out_dir, log=context.log.info, inbox=inbox)
    except OSError as e:
        raise dg.Failure(f"{asset} I/O failed for {mission.name}: {e}",
                         metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}) from e
    except VLMRequestError as e:
        # every answer that did arrive is already in summaries.jsonl: a re-run asks only for these
        raise dg.Failure(
            f"{asset} for {mission.name}: {e}; re-run to retry only the failed images",
            metadata={"stage_a/failed_requests": len(e.failures), "model_fingerprint": model.fingerprint,
                      "failed_images": dg.MetadataValue.md(md_table(["image", "error"], e.failures[:20])),
                      "out_dir": dg.MetadataValue.path(str(out_dir))},
        ) from e
    prefix = "inbox" if inbox else "stage_a"
    meta = _metadata(result, model.fingerprint, model.note, run_config.seed, out_dir, mission.name, prefix)
    return dg.MaterializeResult(metadata={**meta, **settings_metadata(result, run_config, prefix)})


def settings_metadata(result: StageAResult, config: StageAConfig, prefix: str) -> dict:
    """Truncation, the answer-length histogram, the prompt, postprocess and ground-truth counts."""
    meta = {
        f"{prefix}/truncated_images": result.truncated,
        f"{prefix}/truncated_share": round(result.truncated_share, 4),
        f"{prefix}/truncated_groups": sum(1 for r in result.records if r["truncated_images"]),
        f"{prefix}/max_new_tokens": config.max_new_tokens,
        "sample_seed": config.sample_seed,
        "prompt_profile": result.prompt.profile,
        "dataset": result.prompt.dataset,
        "prompt_hash": result.prompt.hash,
        "config": dg.MetadataValue.json(config.to_dict()),
    }
    if config.max_new_tokens < PRODUCTION_MAX_NEW_TOKENS:
        meta["max_new_tokens_note"] = (f"max_new_tokens {config.max_new_tokens} is below the production default "
                                       f"{PRODUCTION_MAX_NEW_TOKENS} (a demo or smoke setting): longer summaries "
                                       f"are cut; see {prefix}/truncated_images")
    if config.max_truncated_share_blocking >= 1.0:
        meta["truncation_note"] = ("max_truncated_share_blocking is 1.0: cut summaries never block downstream "
                                   "assets (a demo or smoke setting); the check still warns")
    if result.completion_tokens:
        png = plot_answer_lengths(result.completion_tokens, config.max_new_tokens, f"{prefix}: answer lengths")
        meta["answer_length_histogram"] = dg.MetadataValue.md(png_markdown(png, "answer lengths"))
    if config.postprocess:
        meta["postprocess_rules"] = dg.MetadataValue.md(md_table(
            ["rule", "photos changed"], [(rule, result.postprocess_rules.get(rule, 0)) for rule in POSTPROCESS_RULES]))
        meta.update({f"{prefix}/postprocess_{rule}": result.postprocess_rules.get(rule, 0)
                     for rule in POSTPROCESS_RULES})
    if config.add_gt_fail_reason:
        gt = result.gt_reasons
        meta.update({f"{prefix}/gt_fail_reasons_attached": gt["attached"],
                     f"{prefix}/fail_groups_without_gt_reason": len(gt["fail_without_reason"]),
                     f"{prefix}/gt_sheet_ids_without_fail_group": len(gt["unmatched_sheet_ids"]),
                     "gt_fail_reasons": dg.MetadataValue.md(md_table(
                         ["reason", "fail groups"], top_gt_reasons(result.records)))})
    return meta


def _metadata(result: StageAResult, fingerprint: str, note: str, seed: int, out_dir, mission: str,
              prefix: str) -> dict:
    labels = Counter(r["label"] for r in result.records)
    reasons = Counter(s.reason.split(":")[0] for s in result.skipped)
    images = sum(len(r["images"]) for r in result.records)
    by_label = ({f"{prefix}/pass_groups": labels["pass"], f"{prefix}/fail_groups": labels["fail"]}
                if prefix == "stage_a" else {})
    return {
        "dagster/row_count": len(result.records),
        "mission": mission,
        f"{prefix}/groups": len(result.records),
        **by_label,
        f"{prefix}/images_summarised": images,
        f"{prefix}/images_generated_this_run": result.summarised_now,
        f"{prefix}/images_reused": result.reused,
        f"{prefix}/images_skipped": len(result.skipped),
        f"{prefix}/images_per_second": round(result.images_per_second, 3),
        f"{prefix}/degenerate_summaries": result.degenerate,
        "skipped_reasons": dg.MetadataValue.md(md_table(["reason", "count"], sorted(reasons.items()))),
        "preview": dg.MetadataValue.md(_preview(result.records)),
        "model_fingerprint": fingerprint,
        "model_note": note or "real checkpoint",
        "run_key": result.run_key,
        "seed": seed,
        "records_path": dg.MetadataValue.path(str(out_dir / "records.jsonl")),
        "skipped_path": dg.MetadataValue.path(str(out_dir / "skipped.jsonl")),
    }


def _preview(records: list[dict], limit: int = 500) -> str:
    rows = [(r["label"] or "inbox", r["group_id"], r["per_image"]["image_1"][:40]) for r in records[:5]]
    return md_table(["label", "group", "image_1 summary"], rows)[:limit]


def load_stage_a_records(storage: StorageResource, mission: str) -> list[dict]:
    path = storage.root() / ASSET_NAME / mission / "records.jsonl"
    records = read_jsonl(path)
    if not records:
        raise dg.Failure(
            f"no Stage-A records for mission {mission!r} at {path}: materialize {ASSET_NAME} for this partition first",
            metadata={"expected_path": dg.MetadataValue.path(str(path)), "exists": path.exists()},
        )
    unlabelled = [r["group_id"] for r in records if r.get("label") not in ("pass", "fail")]
    if unlabelled:  # inbox groups are never training data; they live under inbox_summaries
        raise ValueError(f"{path} holds {len(unlabelled)} records without a pass/fail label (e.g. {unlabelled[:3]}); "
                         f"expected labelled records only: re-materialize {ASSET_NAME} for {mission!r}")
    return records


def load_inbox_records(storage: StorageResource, mission: str) -> list[dict]:
    """The inbox records (label null); an empty list when the inbox is empty, an error when never summarised."""
    path = storage.root() / INBOX_ASSET / mission / "records.jsonl"
    if not path.exists():
        raise dg.Failure(f"no inbox summaries for mission {mission!r} at {path}: materialize {INBOX_ASSET} first",
                         metadata={"expected_path": dg.MetadataValue.path(str(path))})
    return read_jsonl(path)


def inbox_group_id_pattern(storage: StorageResource, mission: str) -> str | None:
    """The group_id_pattern the inbox summaries were made with (so verdicts name groups as Stage-A did),
    or None when the inbox was never summarised by this version (no run.json)."""
    path = storage.root() / INBOX_ASSET / mission / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["config"]["group_id_pattern"]


assets = [stage_a_summaries, inbox_summaries]
