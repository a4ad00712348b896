"""Sharded Stage-A through Dagster: plan -> shard steps (gpu pool, gpu queue, model retry) -> merge
inside the one asset, on the tiny real model; records byte-identical to a one-shard run."""

import dagster as dg
import pytest
from support.stage_a_smoke import SMOKE_STAGE_A

from qc_assets.gpu_steps import GPU_OP_TAGS, GPU_POOL, MODEL_RETRY
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import stage_a_summaries
from qc_assets.stage_a.checks import asset_checks
from qc_assets.stage_a.jobs import stage_a_job
from qc_assets.verdicts.checks import inbox_checks
from qc_assets.verdicts.inbox import inbox_summaries
from resources.storage import StorageResource
from resources.store import read_jsonl
from resources.vlm.resource import VLMResource

MISSION = "BBU接地线检查"


INBOX_ONLY = dg.define_asset_job("inbox_only", selection=dg.AssetSelection.assets(inbox_summaries))


def _run(
    tmp_path, images, model_dir, config, device="cpu", job=stage_a_job, asset="stage_a_summaries", raise_on_error=True
):
    resources = {
        "storage": StorageResource(data_root=str(tmp_path / "data"), images_root=str(images)),
        "vlm": VLMResource(model_path=str(model_dir), device=device),
    }
    defs = dg.Definitions(
        assets=[stage_a_summaries, inbox_summaries],
        asset_checks=[*asset_checks, *inbox_checks],
        jobs=[stage_a_job, INBOX_ONLY],
        resources=resources,
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [MISSION])
        return defs.resolve_job_def(job.name).execute_in_process(
            partition_key=MISSION,
            instance=instance,
            run_config={"ops": {asset: {"config": config}}},
            raise_on_error=raise_on_error,
        )


def test_every_shard_step_is_a_gpu_step_and_nothing_else_is():
    for asset, prefix in ((stage_a_summaries, "stage_a"), (inbox_summaries, "inbox")):
        ops = {node.name: node.definition for node in asset.node_def.nodes}
        assert set(ops) == {f"{prefix}_plan", f"{prefix}_shard", f"{prefix}_merge"}
        shard = ops[f"{prefix}_shard"]
        assert (shard.pool, shard.tags["dagster-celery/queue"], shard.retry_policy) == (
            GPU_POOL,
            GPU_OP_TAGS["dagster-celery/queue"],
            MODEL_RETRY,
        )
        # the plan and the merge load no model: they take no gpu slot and run on the default queue
        assert ops[f"{prefix}_plan"].pool is None and ops[f"{prefix}_merge"].pool is None
        assert "dagster-celery/queue" not in ops[f"{prefix}_plan"].tags


def test_two_shard_steps_give_the_records_of_one(tiny_vlm_dir, sample_images, tmp_path):
    one = _run(tmp_path / "one", sample_images, tiny_vlm_dir, SMOKE_STAGE_A)
    two = _run(tmp_path / "two", sample_images, tiny_vlm_dir, {**SMOKE_STAGE_A, "shards": 2}, device="cpu,cpu")
    assert one.success and two.success
    steps = {e.step_key for e in two.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS}
    assert {
        "stage_a_summaries.stage_a_shard[shard_0]",
        "stage_a_summaries.stage_a_shard[shard_1]",
        "stage_a_summaries.stage_a_plan",
        "stage_a_summaries.stage_a_merge",
    } <= steps
    out = "data/stage_a_summaries/" + MISSION
    assert (tmp_path / "two" / out / "records.jsonl").read_bytes() == (
        tmp_path / "one" / out / "records.jsonl"
    ).read_bytes()
    # the checks read the same files and say the same
    assert {e.check_name: e.passed for e in two.get_asset_check_evaluations()} == {
        e.check_name: e.passed for e in one.get_asset_check_evaluations()
    }
    meta = {k: v.value for k, v in two.asset_materializations_for_node("stage_a_summaries")[0].metadata.items()}
    first = {k: v.value for k, v in one.asset_materializations_for_node("stage_a_summaries")[0].metadata.items()}
    for key in (
        "dagster/row_count",
        "stage_a/images_summarised",
        "stage_a/images_generated_this_run",
        "stage_a/images_skipped",
        "stage_a/degenerate_summaries",
        "stage_a/truncated_images",
    ):
        assert meta[key] == first[key], key
    assert meta["stage_a/shards"] == 2 and first["stage_a/shards"] == 1
    assert meta["stage_a/shard_0_photos"] + meta["stage_a/shard_1_photos"] == meta["stage_a/images_summarised"]
    assert min(meta["stage_a/shard_0_photos"], meta["stage_a/shard_1_photos"]) > 0
    assert meta["photos_per_shard"].startswith("![photos per shard](data:image/png;base64,")
    assert "| 1 |" in meta["shard_table"] and "cpu" in meta["shard_table"]


def test_the_inbox_is_sharded_the_same_way(tiny_vlm_dir, sample_images, tmp_path):
    result = _run(
        tmp_path,
        sample_images,
        tiny_vlm_dir,
        {**SMOKE_STAGE_A, "shards": 2, "sharding_mode": "per_image"},
        job=INBOX_ONLY,
        asset="inbox_summaries",
    )
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("inbox_summaries")[0].metadata.items()}
    assert meta["inbox/shards"] == 2 and meta["sharding_mode"] == "per_image"
    assert meta["inbox/shard_0_photos"] + meta["inbox/shard_1_photos"] == meta["inbox/images_summarised"] > 0
    records = read_jsonl(tmp_path / "data" / "inbox_summaries" / MISSION / "records.jsonl")
    assert records and all(r["label"] is None for r in records)


def test_a_shard_takes_its_device_from_the_resource_list():
    vlm = VLMResource(device="cuda:0,cuda:1")
    assert [vlm.shard_device(s) for s in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert VLMResource(device="cuda").shard_device(5) == "cuda"  # one Celery worker per GPU: each sees only its own
    with pytest.raises(ValueError, match="lists several devices"):
        vlm.get_vlm()
    with pytest.raises(ValueError, match="is for the transformers backend"):
        VLMResource(backend="vllm", device="cuda:0,cuda:1").shard_device(0)


def test_each_shard_step_loads_the_model_on_its_own_device(tiny_vlm_dir, sample_images, tmp_path):
    """The local pinning choice: shard i takes the (i mod n)-th device of the VLM resource's list. Here
    shard 1's device does not exist on this machine: shard 1 fails, shard 0 (cpu) finishes, no merge."""
    result = _run(
        tmp_path, sample_images, tiny_vlm_dir, {**SMOKE_STAGE_A, "shards": 2}, device="cpu,cuda:9", raise_on_error=False
    )
    assert not result.success
    by_step = {
        e.step_key: e
        for e in result.all_events
        if e.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
    }
    assert by_step["stage_a_summaries.stage_a_shard[shard_0]"].event_type == dg.DagsterEventType.STEP_SUCCESS
    failed = by_step["stage_a_summaries.stage_a_shard[shard_1]"]
    assert failed.event_type == dg.DagsterEventType.STEP_FAILURE
    assert "cuda" in str(failed.event_specific_data.error).lower()
    assert "stage_a_summaries.stage_a_merge" not in by_step
    out = tmp_path / "data" / "stage_a_summaries" / MISSION
    assert not (out / "records.jsonl").exists() and (out / "shards" / "shard-0-of-2.json").exists()
