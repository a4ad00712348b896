"""The production path's jobs: the inbox summaries then the verdicts for one mission, with the run request
the folder sensor (qc_assets/sensors.py) makes of a changed inbox; and the cross-mission health table."""

import dagster as dg

from qc_assets.asset_names import INBOX_SUMMARIES, STAGE_B_GUIDANCE
from qc_assets.stage_a.settings import inbox_settings, settings_from_env
from qc_assets.stage_a.watch import part_digest
from qc_assets.verdicts.assets import qc_verdicts
from qc_assets.verdicts.health_assets import mission_health
from qc_assets.verdicts.inbox import inbox_summaries
from resources.storage import StorageResource

# QC_STAGE_A_CONFIG: the Stage-A settings of runs launched without a run config (sensor, backfill), less the
# labelled-only ones
_settings = inbox_settings(settings_from_env())
inbox_job = dg.define_asset_job(
    "inbox_verdicts_job",
    selection=dg.AssetSelection.assets(inbox_summaries, qc_verdicts),
    config={"ops": {INBOX_SUMMARIES: {"config": _settings}}} if _settings else None,
    description="Inbox summaries, then production verdicts, for one mission partition.",
)
health_job = dg.define_asset_job(
    "mission_health_job", selection=[mission_health], description="Refresh the cross-mission health table."
)


def inbox_run_request(storage: StorageResource, name: str, folders: dict, log) -> dg.RunRequest:
    """A group arrived, was replaced, or a reviewer moved one out: summarise the inbox, then judge it."""
    selection = None
    if not (storage.root() / STAGE_B_GUIDANCE / name / "guidance" / "best.json").exists():
        # no kept guidance yet: summarise now, judge once Stage-B has run
        selection = [inbox_summaries.key]
        log(f"{name!r}: no kept guidance yet, requesting {inbox_summaries.key.to_user_string()} only")
    return dg.RunRequest(
        run_key=f"{name}:inbox:{part_digest(folders, 'inbox')}",
        partition_key=name,
        job_name=inbox_job.name,
        asset_selection=selection,
    )


jobs = [inbox_job, health_job]
