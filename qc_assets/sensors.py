"""Sensors: new mission folders become partitions; changed labelled groups re-run Stage-A for that
mission; new or moved inbox groups run the inbox summaries and the production verdicts for it."""


import json

import dagster as dg

from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import ASSET_NAME, INBOX_ASSET, inbox_summaries, stage_a_summaries
from qc_assets.stage_a.settings import inbox_settings, settings_from_env
from qc_assets.stage_a.watch import changed_parts, part_digest, scan, sweep_budget_from_env, unsafe_reason
from qc_assets.verdicts.assets import GUIDANCE_ASSET, qc_verdicts
from resources.storage import StorageResource

# QC_STAGE_A_CONFIG: the Stage-A settings of runs launched without a run config (sensor, backfill)
_settings = settings_from_env()
stage_a_job = dg.define_asset_job(
    "stage_a_job", selection=dg.AssetSelection.assets(stage_a_summaries),
    config={"ops": {ASSET_NAME: {"config": _settings}}} if _settings else None,
    description="Stage-A and its checks for one mission partition.")
inbox_job = dg.define_asset_job(
    "inbox_verdicts_job", selection=dg.AssetSelection.assets(inbox_summaries, qc_verdicts),
    config={"ops": {INBOX_ASSET: {"config": inbox_settings(_settings)}}} if inbox_settings(_settings) else None,
    description="Inbox summaries, then production verdicts, for one mission partition.")


def _run_requests(name: str, parts: list[str], folders: dict, has_guidance: bool, log) -> list:
    requests = []
    if "labelled" in parts:
        requests.append(dg.RunRequest(run_key=f"{name}:labelled:{part_digest(folders, 'labelled')}",
                                      partition_key=name, job_name=stage_a_job.name))
    if "inbox" in parts:  # a group arrived, was replaced, or a reviewer moved one out
        selection = None
        if not has_guidance:  # no kept guidance yet: summarise now, judge once Stage-B has run
            selection = [inbox_summaries.key]
            log(f"{name!r}: no kept guidance yet, requesting {inbox_summaries.key.to_user_string()} only")
        requests.append(dg.RunRequest(run_key=f"{name}:inbox:{part_digest(folders, 'inbox')}", partition_key=name,
                                      job_name=inbox_job.name, asset_selection=selection))
    return requests


@dg.sensor(jobs=[stage_a_job, inbox_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING)
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
        has_guidance = (storage.root() / GUIDANCE_ASSET / name / "guidance" / "best.json").exists()
        run_requests += _run_requests(name, parts, folders, has_guidance, context.log.info)
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
jobs = [stage_a_job, inbox_job]
