"""Sensors: new mission folders become partitions; new or changed groups re-run that mission."""


import json

import dagster as dg

from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import stage_a_summaries
from qc_assets.stage_a.watch import changed_missions, mission_signatures, unsafe_reason
from resources.storage import StorageResource

stage_a_job = dg.define_asset_job("stage_a_job", selection=dg.AssetSelection.assets(stage_a_summaries),
                                  description="Stage-A and its checks for one mission partition.")


@dg.sensor(job=stage_a_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def new_images_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    previous = json.loads(context.cursor) if context.cursor else {}
    current = mission_signatures(storage.images())
    registered = all_missions()
    known = set(context.instance.get_dynamic_partitions(mission_partitions.name))
    new_partitions, run_requests, ignored = [], [], {}
    for name in changed_missions(previous, current):
        reason = unsafe_reason(name) or (None if name in registered else "not in the mission registry")
        if reason:
            ignored[name] = reason
            continue
        if name not in known:
            new_partitions.append(name)
        run_requests.append(dg.RunRequest(run_key=f"{name}:{current[name]}", partition_key=name))
    for name, reason in ignored.items():
        context.log.warning(f"ignoring folder {name!r}: {reason}")
    # ignored folders keep their old signature so they are reported again once registered or renamed
    cursor = {name: sig for name, sig in current.items() if name not in ignored}
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mission_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(cursor, ensure_ascii=False, sort_keys=True),
    )


sensors = [new_images_sensor]
jobs = [stage_a_job]
