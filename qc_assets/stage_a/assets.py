"""Dagster wiring for Stage-A: config + resources -> `run_stage_a` -> files + metadata."""


from collections import Counter

import dagster as dg

from qc_assets.gpu_steps import GPU_OP_TAGS, GPU_POOL, MODEL_RETRY
from qc_assets.markdown import md_table
from qc_assets.missions import get_mission
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.runner import StageAConfig, StageAResult, run_stage_a
from resources.store import read_jsonl
from resources.storage import StorageResource
from resources.vlm import VisionDecode
from resources.vlm.resource import VLMResource

ASSET_NAME = "stage_a_summaries"


class StageASummariesConfig(dg.Config):
    mode: str = "per_group"  # per_group | per_image
    batch_size: int = 8
    pass_cap: int | None = None
    fail_cap: int | None = None
    seed: int = 42
    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.05


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
    mission = get_mission(context.partition_key)
    decode = VisionDecode(config.max_new_tokens, config.temperature, config.top_p, config.repetition_penalty,
                          config.seed)
    run_config = StageAConfig(config.mode, config.batch_size, config.pass_cap, config.fail_cap, config.seed, decode)
    out_dir = storage.asset_dir(ASSET_NAME, mission.name)
    model = vlm.get_vlm()
    try:
        result = run_stage_a(storage.images(), mission, model, run_config, out_dir, log=context.log.info)
    except OSError as e:
        raise dg.Failure(f"Stage-A I/O failed for {mission.name}: {e}",
                         metadata={"out_dir": dg.MetadataValue.path(str(out_dir))}) from e
    return dg.MaterializeResult(metadata=_metadata(result, model.fingerprint, model.note, config.seed, out_dir))


def _metadata(result: StageAResult, fingerprint: str, note: str, seed: int, out_dir) -> dict:
    labels = Counter(r["label"] for r in result.records)
    reasons = Counter(s.reason.split(":")[0] for s in result.skipped)
    images = sum(len(r["images"]) for r in result.records)
    return {
        "dagster/row_count": len(result.records),
        "mission": result.records[0]["mission"] if result.records else "",
        "stage_a/groups": len(result.records),
        "stage_a/pass_groups": labels["pass"],
        "stage_a/fail_groups": labels["fail"],
        "stage_a/images_summarised": images,
        "stage_a/images_generated_this_run": result.summarised_now,
        "stage_a/images_reused": result.reused,
        "stage_a/images_skipped": len(result.skipped),
        "stage_a/images_per_second": round(result.images_per_second, 3),
        "stage_a/degenerate_summaries": result.degenerate,
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
    rows = [(r["label"], r["group_id"], r["per_image"]["image_1"][:40]) for r in records[:5]]
    return md_table(["label", "group", "image_1 summary"], rows)[:limit]


def load_stage_a_records(storage: StorageResource, mission: str) -> list[dict]:
    path = storage.root() / ASSET_NAME / mission / "records.jsonl"
    records = read_jsonl(path)
    if not records:
        raise dg.Failure(
            f"no Stage-A records for mission {mission!r} at {path}: materialize {ASSET_NAME} for this partition first",
            metadata={"expected_path": dg.MetadataValue.path(str(path)), "exists": path.exists()},
        )
    return records


assets = [stage_a_summaries]
