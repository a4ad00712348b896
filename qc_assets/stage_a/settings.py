"""Stage-A settings for runs nobody writes a run config for: sensor-launched runs and CLI backfills.

`QC_STAGE_A_CONFIG` names a YAML mapping of `StageAConfig` fields (for example `dataset: rru`,
`excel_path: ...`, or a smaller `max_new_tokens` for the smoke model). It becomes the default run
config of the jobs that the sensor launches (`stage_a_job`, `inbox_verdicts_job`); a run config given
at launch still wins. The inbox gets the same settings except the sampling and ground-truth fields,
which only apply to labelled groups, so both kinds of summaries read alike.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from qc_assets.stage_a.runner import StageAConfig
from resources.env import env

ENV_VAR = "QC_STAGE_A_CONFIG"
LABELLED_ONLY = (
    "pass_cap",
    "fail_cap",
    "sample_seed",
    "add_gt_fail_reason",
    "excel_path",
    "excel_group_column",
    "excel_reason_column",
)


def load_settings(path: str | Path) -> dict:
    """The validated field values; ValueError naming the file and the bad field."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{ENV_VAR} file {path}: expected a mapping of StageAConfig fields, got {type(raw).__name__}")
    try:
        StageAConfig(**raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{ENV_VAR} file {path}: {e}") from e
    return raw


def settings_from_env() -> dict:
    path = env(ENV_VAR, "")
    if not path:
        return {}
    if not Path(path).is_file():
        raise ValueError(f"{ENV_VAR}={path} does not exist: point it at a YAML file of Stage-A settings or unset it")
    return load_settings(path)


def inbox_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in LABELLED_ONLY}
