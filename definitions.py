"""The one Dagster code location: assets, checks, sensors, jobs and resources.

Loads no model library: models load inside resources when a run needs them.
Resources read their settings from the environment (QC_DATA_ROOT, QC_VLM_MODEL, ...) so the same
definitions run the CPU demo and production; see README "Production".
"""

import dagster as dg

from qc_assets import sensors
from qc_assets.stage_a import assets as stage_a_assets
from qc_assets.stage_a import checks as stage_a_checks
from resources.storage import StorageResource
from resources.store import data_root
from resources.vlm_resource import VLMResource

qc_pipeline = dg.define_asset_job(
    "qc_pipeline",
    selection=dg.AssetSelection.groups("qc"),
    description="Every per-mission asset and its checks, for one mission partition.",
)

defs = dg.Definitions(
    assets=[*stage_a_assets.assets],
    asset_checks=[*stage_a_checks.asset_checks],
    sensors=[*sensors.sensors],
    jobs=[qc_pipeline, *sensors.jobs],
    resources={
        "storage": StorageResource(data_root=str(data_root()), images_root=dg.EnvVar("QC_IMAGES_ROOT").get_value("")),
        "vlm": VLMResource(
            backend=dg.EnvVar("QC_VLM_BACKEND").get_value("transformers"),
            model_path=dg.EnvVar("QC_VLM_MODEL").get_value(""),
            device=dg.EnvVar("QC_DEVICE").get_value("cpu"),
            dtype=dg.EnvVar("QC_DTYPE").get_value("float32"),
        ),
    },
)
