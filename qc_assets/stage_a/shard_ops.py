"""The Dagster fan-out of Stage-A: one graph-backed asset per kind (labelled, inbox), each
plan -> N shard steps -> merge for a mission partition (domain code: qc_assets/stage_a/sharding.py).

- The plan step loads no model and holds no GPU: it discovers, samples, keys and writes `plan.json`,
  then emits one dynamic output per shard.
- Each shard step is in the `gpu` pool (the pool limit bounds how many run at once: 1 on the demo
  machine, the number of GPUs in production), carries the Celery `gpu` queue tag and the model retry
  policy, and loads the model once, on `VLMResource.shard_device(shard)`.
- The merge runs only after every shard step succeeded (`.collect()`), checks the shards' markers
  once more, and reports the asset's metadata.

The run config keeps its shape (`ops: {<asset>: {config: {...}}}`): a config mapping hands it to the
plan step, which passes the validated settings to the shards and the merge.
"""

import dagster as dg

from qc_assets.gpu_steps import model_op
from qc_assets.markdown import md_table
from qc_assets.missions import get_mission
from qc_assets.partitions import mission_partitions
from qc_assets.run_config import to_domain
from qc_assets.stage_a.runner import StageAConfig
from qc_assets.stage_a.sharding import ShardNotFinished, load_plan, merge_shards, plan_stage_a, run_shard
from resources.storage import StorageResource
from resources.vlm import VLMRequestError
from resources.vlm.resource import VLMResource


def sharded_stage_a_asset(
    name: str, inbox: bool, config_cls: type[dg.Config], description: str, check_config, report
) -> dg.AssetsDefinition:
    """`check_config(StageAConfig)` raises on settings this asset refuses; `report(result, config, fingerprint,
    note, out_dir, mission)` returns the asset's metadata."""
    prefix = "inbox" if inbox else "stage_a"

    @dg.op(
        name=f"{prefix}_plan",
        out={"plan": dg.Out(dict), "shards": dg.DynamicOut(dict)},
        description="Discover, sample and key the mission's photos; one output per shard. Loads no model.",
    )
    def plan(context: dg.OpExecutionContext, config: config_cls, storage: StorageResource, vlm: VLMResource):
        run_config = to_domain(config, StageAConfig)
        check_config(run_config)
        mission = get_mission(context.partition_key)
        out_dir = storage.asset_dir(name, mission.name)
        planned = plan_stage_a(storage.images(), mission, vlm.fingerprint(), run_config, out_dir, inbox=inbox)
        sizes = [len(planned.items(s)) for s in range(planned.shards)]
        context.log.info(
            f"{mission.name}: {len(planned.groups)} groups, {sum(sizes)} images; plan {planned.plan_id}, "
            f"{planned.shards} shard(s) ({planned.sharding_mode}) of {sizes} images"
        )
        task = {"plan_id": planned.plan_id, "config": run_config.to_dict()}
        yield dg.Output(task, output_name="plan")
        for shard in range(planned.shards):
            yield dg.DynamicOutput({**task, "shard": shard}, mapping_key=f"shard_{shard}", output_name="shards")

    @model_op(
        name=f"{prefix}_shard",
        description="Summarise the photos of one shard not yet in any log (gpu pool, gpu queue).",
    )
    def shard(context: dg.OpExecutionContext, task: dict, storage: StorageResource, vlm: VLMResource) -> dict:
        config = StageAConfig(**task["config"])
        mission = get_mission(context.partition_key)
        out_dir = storage.asset_dir(name, mission.name)
        planned = load_plan(out_dir)
        if planned.plan_id != task["plan_id"]:  # another run re-planned this mission in between
            raise dg.Failure(
                f"{name} for {mission.name}: plan.json is now plan {planned.plan_id}, this run planned "
                f"{task['plan_id']}; re-run the asset",
                metadata={"out_dir": dg.MetadataValue.path(str(out_dir))},
            )
        device = vlm.shard_device(task["shard"])
        model = vlm.get_vlm(device)
        try:
            result = run_shard(
                planned, task["shard"], mission, model, config, out_dir, log=context.log.info, device=device
            )
        except OSError as e:
            raise dg.Failure(
                f"{name} shard {task['shard']} I/O failed for {mission.name}: {e}",
                metadata={"out_dir": dg.MetadataValue.path(str(out_dir))},
            ) from e
        except VLMRequestError as e:
            # every answer that did arrive is already in the shard's log: a re-run asks only for these
            raise dg.Failure(
                f"{name} shard {task['shard']} for {mission.name}: {e}; re-run to retry only the failed images",
                metadata={
                    f"{prefix}/failed_requests": len(e.failures),
                    "model_fingerprint": model.fingerprint,
                    "failed_images": dg.MetadataValue.md(md_table(["image", "error"], e.failures[:20])),
                    "out_dir": dg.MetadataValue.path(str(out_dir)),
                },
            ) from e
        return result.to_json(planned.plan_id)

    @dg.op(name=f"{prefix}_merge", description="Merge the finished shards into the canonical records (atomic).")
    def merge(
        context: dg.OpExecutionContext, plan: dict, shards: list[dict], storage: StorageResource, vlm: VLMResource
    ) -> dg.MaterializeResult:
        config = StageAConfig(**plan["config"])
        mission = get_mission(context.partition_key)
        out_dir = storage.asset_dir(name, mission.name)
        planned = load_plan(out_dir)
        fingerprint = vlm.fingerprint()
        try:
            if planned.plan_id != plan["plan_id"]:
                raise ShardNotFinished(f"plan.json is now plan {planned.plan_id}, this run planned {plan['plan_id']}")
            result = merge_shards(planned, config, out_dir, fingerprint, mission, log=context.log.info)
        except ShardNotFinished as e:
            raise dg.Failure(
                f"{name} for {mission.name}: {e}",
                metadata={"shard_steps_succeeded": len(shards), "out_dir": dg.MetadataValue.path(str(out_dir))},
            ) from e
        except OSError as e:
            raise dg.Failure(
                f"{name} merge I/O failed for {mission.name}: {e}",
                metadata={"out_dir": dg.MetadataValue.path(str(out_dir))},
            ) from e
        return dg.MaterializeResult(metadata=report(result, config, fingerprint, vlm.note(), out_dir, mission.name))

    @dg.config_mapping
    def to_plan_step(val: config_cls) -> dict:
        return {f"{prefix}_plan": {"config": val.model_dump()}}

    @dg.graph_asset(
        name=name,
        partitions_def=mission_partitions,
        group_name="qc",
        kinds={"pytorch", "transformers"},
        description=description,
        config=to_plan_step,
    )
    def sharded():
        task, per_shard = plan()
        return merge(task, per_shard.map(shard).collect())

    return sharded
