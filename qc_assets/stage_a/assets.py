"""Dagster wiring for Stage-A: the sharded asset over the labelled groups (shard_ops.py) and the metadata
it reports, which the inbox summaries (qc_assets/verdicts/inbox.py, the same sharded asset) report too."""

from collections import Counter

import dagster as dg

from qc_assets.asset_names import STAGE_A_SUMMARIES
from qc_assets.markdown import md_table
from qc_assets.plots import png_markdown
from qc_assets.run_config import dagster_config
from qc_assets.stage_a.gt_reasons import top_gt_reasons
from qc_assets.stage_a.lengths import plot_answer_lengths, plot_photos_per_shard
from qc_assets.stage_a.postprocess import RULES as POSTPROCESS_RULES
from qc_assets.stage_a.runner import PRODUCTION_MAX_NEW_TOKENS, StageAConfig, StageAResult
from qc_assets.stage_a.shard_ops import sharded_stage_a_asset
from resources.storage import StorageResource
from resources.store import read_jsonl

StageASummariesConfig = dagster_config(StageAConfig, "StageASummariesConfig")


def _labelled_only(config: StageAConfig) -> None:
    """The labelled asset takes every setting StageAConfig validates."""


def stage_a_report(prefix: str):
    """The `report` of a sharded Stage-A asset: its metadata, each number under `<prefix>/`."""

    def report(result: StageAResult, config: StageAConfig, fingerprint: str, note: str, out_dir, mission: str) -> dict:
        return {
            **_metadata(result, fingerprint, note, config.seed, out_dir, mission, prefix),
            **settings_metadata(result, config, prefix),
            **shard_metadata(result, config, prefix),
        }

    return report


stage_a_summaries = sharded_stage_a_asset(
    STAGE_A_SUMMARIES,
    False,
    StageASummariesConfig,
    "One-line Chinese VLM summary of every photo of a mission, one record per group occurrence; `shards` "
    "parallel gpu steps, merged in one canonical order.",
    _labelled_only,
    stage_a_report("stage_a"),
)


def shard_metadata(result: StageAResult, config: StageAConfig, prefix: str) -> dict:
    """Per-shard photo counts and timings, and a plot of photos per shard."""
    shards = result.shard_results
    meta = {
        f"{prefix}/shards": config.shards,
        "sharding_mode": config.sharding_mode,
        "shard_table": dg.MetadataValue.md(
            md_table(
                ["shard", "photos", "summarised now", "reused", "seconds", "device"],
                [
                    (m["shard"], m["assigned"], m["summarised_now"], m["reused"], m["seconds"], m["device"] or "-")
                    for m in shards
                ],
            )
        ),
    }
    for m in shards:
        meta[f"{prefix}/shard_{m['shard']}_photos"] = m["assigned"]
        meta[f"{prefix}/shard_{m['shard']}_summarised_now"] = m["summarised_now"]
        meta[f"{prefix}/shard_{m['shard']}_seconds"] = m["seconds"]
    if shards:
        meta[f"{prefix}/slowest_shard_seconds"] = max(m["seconds"] for m in shards)
        png = plot_photos_per_shard(shards, f"{prefix}: photos per shard")
        meta["photos_per_shard"] = dg.MetadataValue.md(png_markdown(png, "photos per shard"))
    return meta


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
        meta["max_new_tokens_note"] = (
            f"max_new_tokens {config.max_new_tokens} is below the production default "
            f"{PRODUCTION_MAX_NEW_TOKENS} (a demo or smoke setting): longer summaries "
            f"are cut; see {prefix}/truncated_images"
        )
    if config.max_truncated_share_blocking >= 1.0:
        meta["truncation_note"] = (
            "max_truncated_share_blocking is 1.0: cut summaries never block downstream "
            "assets (a demo or smoke setting); the check still warns"
        )
    if result.completion_tokens:
        png = plot_answer_lengths(result.completion_tokens, config.max_new_tokens, f"{prefix}: answer lengths")
        meta["answer_length_histogram"] = dg.MetadataValue.md(png_markdown(png, "answer lengths"))
    if config.postprocess:
        meta["postprocess_rules"] = dg.MetadataValue.md(
            md_table(
                ["rule", "photos changed"],
                [(rule, result.postprocess_rules.get(rule, 0)) for rule in POSTPROCESS_RULES],
            )
        )
        meta.update(
            {f"{prefix}/postprocess_{rule}": result.postprocess_rules.get(rule, 0) for rule in POSTPROCESS_RULES}
        )
    if config.add_gt_fail_reason:
        gt = result.gt_reasons
        meta.update(
            {
                f"{prefix}/gt_fail_reasons_attached": gt["attached"],
                f"{prefix}/fail_groups_without_gt_reason": len(gt["fail_without_reason"]),
                f"{prefix}/gt_sheet_ids_without_fail_group": len(gt["unmatched_sheet_ids"]),
                "gt_fail_reasons": dg.MetadataValue.md(
                    md_table(["reason", "fail groups"], top_gt_reasons(result.records))
                ),
            }
        )
    return meta


def _metadata(result: StageAResult, fingerprint: str, note: str, seed: int, out_dir, mission: str, prefix: str) -> dict:
    labels = Counter(r["label"] for r in result.records)
    reasons = Counter(s.reason.split(":")[0] for s in result.skipped)
    images = sum(len(r["images"]) for r in result.records)
    by_label = (
        {f"{prefix}/pass_groups": labels["pass"], f"{prefix}/fail_groups": labels["fail"]}
        if prefix == "stage_a"
        else {}
    )
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
    path = storage.root() / STAGE_A_SUMMARIES / mission / "records.jsonl"
    records = read_jsonl(path)
    if not records:
        raise dg.Failure(
            f"no Stage-A records for mission {mission!r} at {path}: materialize {STAGE_A_SUMMARIES} for this "
            "partition first",
            metadata={"expected_path": dg.MetadataValue.path(str(path)), "exists": path.exists()},
        )
    unlabelled = [r["group_id"] for r in records if r.get("label") not in ("pass", "fail")]
    if unlabelled:  # inbox groups are never training data; they live under inbox_summaries
        raise ValueError(
            f"{path} holds {len(unlabelled)} records without a pass/fail label (e.g. {unlabelled[:3]}); "
            f"expected labelled records only: re-materialize {STAGE_A_SUMMARIES} for {mission!r}"
        )
    return records


assets = [stage_a_summaries]
