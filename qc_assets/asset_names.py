"""Every asset's name, in one place: the asset keys, the storage folders under the data root (an asset
writes under `<data root>/<its name>/`), and what `deps`, jobs, sensors and checks select by name.

Each stage's code refers to another stage's asset by these constants, never by a string of its own.
"""

# Stage-A (qc_assets/stage_a/) and the inbox it also summarises (qc_assets/verdicts/inbox.py)
STAGE_A_SUMMARIES = "stage_a_summaries"
INBOX_SUMMARIES = "inbox_summaries"
# Stage-B (qc_assets/stage_b/)
STAGE_B_GUIDANCE = "stage_b_guidance"
# the production path (qc_assets/verdicts/)
QC_VERDICTS = "qc_verdicts"
MISSION_HEALTH = "mission_health"
# teacher distillation (qc_assets/distill/)
DISTILL_CHATML = "distill_chatml"
# the student (qc_assets/student/)
FUSED_SFT_CHECKPOINT = "fused_sft_checkpoint"
DPO_CHECKPOINT = "dpo_checkpoint"
GRPO_CHECKPOINT = "grpo_checkpoint"
# FastDistill (qc_assets/fastdistill/); its runs share one storage folder, `fastdistill/<run id>/`
FASTDISTILL_INPUTS = "fastdistill_inputs"
FASTDISTILL_TEACHER = "fastdistill_teacher"
FASTDISTILL_SCORED = "fastdistill_scored"
FASTDISTILL_DATASET = "fastdistill_dataset"
FASTDISTILL_STUDENT = "fastdistill_student"
