"""The student's jobs: unpartitioned (one student for every mission), so none can share a job with the
per-mission assets; `dpo_job` and `grpo_job` are optional and off in the demo."""

import dagster as dg

from qc_assets.asset_names import DPO_CHECKPOINT, FUSED_SFT_CHECKPOINT, GRPO_CHECKPOINT

student_job = dg.define_asset_job(
    "student_job",
    selection=dg.AssetSelection.assets(FUSED_SFT_CHECKPOINT),
    description="Train one student on every mission, gate it per mission, promote it on pass.",
)
dpo_job = dg.define_asset_job(
    "dpo_job",
    selection=dg.AssetSelection.assets(DPO_CHECKPOINT),
    description="Optional: DPO of the student on the exported preference pairs.",
)
grpo_job = dg.define_asset_job(
    "grpo_job",
    selection=dg.AssetSelection.assets(GRPO_CHECKPOINT),
    description="Optional: GRPO of the student on the train split.",
)

jobs = [student_job, dpo_job, grpo_job]
