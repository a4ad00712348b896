"""Sensors: new mission folders become partitions; changed labelled groups re-run Stage-A for that
mission; new or moved inbox groups run the inbox summaries and the production verdicts for it."""


import json

import dagster as dg

from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import inbox_summaries, stage_a_summaries
from qc_assets.stage_a.watch import NO_INBOX, changed_parts, scan, unsafe_reason
from qc_assets.verdicts.assets import GUIDANCE_ASSET, qc_verdicts
from resources.storage import StorageResource

stage_a_job = dg.define_asset_job("stage_a_job", selection=dg.AssetSelection.assets(stage_a_summaries),
                                  description="Stage-A and its checks for one mission partition.")
inbox_job = dg.define_asset_job("inbox_verdicts_job", selection=dg.AssetSelection.assets(inbox_summaries, qc_verdicts),
                                description="Inbox summaries, then production verdicts, for one mission partition.")


def _run_requests(name: str, parts: list[str], state: dict, before: dict, has_guidance: bool, log) -> list:
    requests = []
    if "labelled" in parts:
        requests.append(dg.RunRequest(run_key=f"{name}:labelled:{state['labelled']}", partition_key=name,
                                      job_name=stage_a_job.name))
    # a mission that never had an inbox folder has nothing to judge
    if "inbox" in parts and not (state["inbox"] == NO_INBOX and before.get("inbox") in (None, NO_INBOX)):
        selection = None
        if not has_guidance:  # no kept guidance yet: summarise now, judge once Stage-B has run
            selection = [inbox_summaries.key]
            log(f"{name!r}: no kept guidance yet, requesting {inbox_summaries.key.to_user_string()} only")
        requests.append(dg.RunRequest(run_key=f"{name}:inbox:{state['inbox']}", partition_key=name,
                                      job_name=inbox_job.name, asset_selection=selection))
    return requests


@dg.sensor(jobs=[stage_a_job, inbox_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING)
def new_images_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    previous = json.loads(context.cursor) if context.cursor else {}
    current = scan(storage.images())
    registered = all_missions()
    known = set(context.instance.get_dynamic_partitions(mission_partitions.name))
    new_partitions, run_requests, ignored = [], [], {}
    for name, state in current.items():
        before = previous.get(name) if isinstance(previous.get(name), dict) else {}
        parts = changed_parts(before, state)
        if not parts:
            continue
        reason = unsafe_reason(name) or (None if name in registered else "not in the mission registry")
        if reason:
            ignored[name] = reason
            continue
        if name not in known:
            new_partitions.append(name)
        has_guidance = (storage.root() / GUIDANCE_ASSET / name / "guidance" / "best.json").exists()
        run_requests += _run_requests(name, parts, state, before, has_guidance, context.log.info)
    for name, reason in ignored.items():
        context.log.warning(f"ignoring folder {name!r}: {reason}")
    # ignored folders keep their old state so they are reported again once registered or renamed
    cursor = {name: state for name, state in current.items() if name not in ignored}
    cursor.update({name: previous[name] for name in ignored if name in previous})
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[mission_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(cursor, ensure_ascii=False, sort_keys=True),
    )


sensors = [new_images_sensor]
jobs = [stage_a_job, inbox_job]
