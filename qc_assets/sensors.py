"""The folder sensor: new mission folders become partitions; changed labelled groups re-run Stage-A for
that mission (qc_assets/stage_a/jobs.py); new or moved inbox groups run the inbox summaries and the
production verdicts for it (qc_assets/verdicts/jobs.py)."""

import json

import dagster as dg

from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.jobs import labelled_run_request, stage_a_job
from qc_assets.stage_a.watch import changed_parts, scan, sweep_budget_from_env, unsafe_reason
from qc_assets.verdicts.jobs import inbox_job, inbox_run_request
from resources.storage import StorageResource


def _run_requests(storage: StorageResource, name: str, parts: list[str], folders: dict, log) -> list:
    requests = []
    if "labelled" in parts:
        requests.append(labelled_run_request(name, folders))
    if "inbox" in parts:
        requests.append(inbox_run_request(storage, name, folders, log))
    return requests


@dg.sensor(jobs=[stage_a_job, inbox_job], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def new_images_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    # a cursor of the earlier sensor (one hash per mission) has no "missions": everything counts as new
    previous = cursor.get("missions", {}) if isinstance(cursor.get("missions"), dict) else {}
    current, swept, stats = scan(storage.images(), previous, cursor.get("sweep", ""), sweep_budget_from_env())
    registered = all_missions()
    known = set(context.instance.get_dynamic_partitions(mission_partitions.name))
    new_partitions, run_requests, ignored = [], [], {}
    for name, folders in current.items():
        parts = changed_parts(previous.get(name), folders)
        if not parts:
            continue
        reason = unsafe_reason(name) or (None if name in registered else "not in the mission registry")
        if reason:
            ignored[name] = reason
            continue
        if name not in known:
            new_partitions.append(name)
        run_requests += _run_requests(storage, name, parts, folders, context.log.info)
    for name, reason in ignored.items():
        context.log.warning(f"ignoring folder {name!r}: {reason}")
    # ignored folders keep their old state so they are reported again once registered or renamed
    missions = {name: folders for name, folders in current.items() if name not in ignored}
    missions.update({name: previous[name] for name in ignored if name in previous})
    context.log.debug(f"tick: {len(current)} mission folders, {stats} group folders stat-ed, swept to {swept!r}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mission_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps({"missions": missions, "sweep": swept}, ensure_ascii=False, sort_keys=True),
    )


sensors = [new_images_sensor]
