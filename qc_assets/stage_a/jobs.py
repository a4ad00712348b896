"""Stage-A's job: the labelled summaries and their checks for one mission (what the folder sensor,
qc_assets/sensors.py, launches when a mission's labelled groups change)."""

import dagster as dg

from qc_assets.asset_names import STAGE_A_SUMMARIES
from qc_assets.stage_a.assets import stage_a_summaries
from qc_assets.stage_a.settings import settings_from_env
from qc_assets.stage_a.watch import part_digest

# QC_STAGE_A_CONFIG: the Stage-A settings of runs launched without a run config (sensor, backfill)
_settings = settings_from_env()
stage_a_job = dg.define_asset_job(
    "stage_a_job",
    selection=dg.AssetSelection.assets(stage_a_summaries),
    config={"ops": {STAGE_A_SUMMARIES: {"config": _settings}}} if _settings else None,
    description="Stage-A and its checks for one mission partition.",
)


def labelled_run_request(name: str, folders: dict) -> dg.RunRequest:
    """A labelled group arrived, changed or left: re-run Stage-A for the mission."""
    return dg.RunRequest(
        run_key=f"{name}:labelled:{part_digest(folders, 'labelled')}", partition_key=name, job_name=stage_a_job.name
    )


jobs = [stage_a_job]
