"""Re-learning that triggers itself, the declarative way: `relearn_due` is an AutomationCondition on
`stage_b_guidance`, evaluated per mission partition by `relearn_automation` (an automation condition
sensor) under the daemon. No sensor of ours decides when to run; the condition only says which
missions are due (qc_assets/stage_b/relearn.py) and Dagster requests their runs, tagged `qc/trigger`.
"""

import warnings

import dagster as dg

from qc_assets.asset_names import DISTILL_CHATML, FUSED_SFT_CHECKPOINT, QC_VERDICTS, STAGE_A_SUMMARIES, STAGE_B_GUIDANCE
from qc_assets.stage_b.relearn import TRIGGER_TAG, RelearnSettings, relearn_reason
from qc_assets.verdicts.assets import mission_drift
from resources.env import env, env_number
from resources.storage import StorageResource, storage_from_env
from resources.store import read_jsonl


def due_reason(storage: StorageResource, mission: str, settings: RelearnSettings) -> str | None:
    records = read_jsonl(storage.root() / STAGE_A_SUMMARIES / mission / "records.jsonl")
    return relearn_reason(
        storage.root() / STAGE_B_GUIDANCE / mission, records, mission_drift(storage, mission), settings
    )


class RelearnDue(dg.AutomationCondition):
    """True for the missions whose production verdicts drifted or that gathered `relearn_after` new
    labelled groups, outside the cooldown (QC_RELEARN_AFTER, QC_RELEARN_COOLDOWN_S)."""

    @property
    def name(self) -> str:
        return "relearn_due"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        storage, settings = storage_from_env(), RelearnSettings.from_env()
        missions = context.candidate_subset.expensively_compute_partition_keys()
        due = {m for m in missions if due_reason(storage, m, settings) is not None}
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(due))


# Not while a run of the partition is queued or running (its result may already answer the drift), nor
# while Stage-A still summarises newly labelled groups (the re-learning should see them).
RELEARN_CONDITION = (
    RelearnDue() & ~dg.AutomationCondition.in_progress() & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("re-learn on drift or new labelled groups, outside the cooldown")


class StudentRetrainEnabled(dg.AutomationCondition):
    """QC_RETRAIN_STUDENT=1 (read at each evaluation): a new kept guidance also re-distils and retrains
    the student. Off by default: a student is retrained on purpose, not after every re-learning."""

    @property
    def name(self) -> str:
        return "student_retrain_enabled"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        enabled = env("QC_RETRAIN_STUDENT", "0") == "1"
        return dg.AutomationResult(context, context.candidate_subset if enabled else context.get_empty_subset())


# On distill_chatml and fused_sft_checkpoint: follow a new kept guidance only when QC_RETRAIN_STUDENT=1.
RETRAIN_CONDITION = (StudentRetrainEnabled() & dg.AutomationCondition.eager()).with_label(
    "retrain the student after a new kept guidance (QC_RETRAIN_STUDENT=1)"
)
# How often the automation sensors evaluate (seconds); the end-to-end test shortens it.
INTERVAL_S = env_number("QC_AUTOMATION_INTERVAL_S", "60", int)

with warnings.catch_warnings():  # use_user_code_server is "beta" in Dagster 1.13; we depend on it knowingly
    warnings.simplefilter("ignore", dg.BetaWarning)
    relearn_automation = dg.AutomationConditionSensorDefinition(
        "relearn_automation",
        target=dg.AssetSelection.assets(STAGE_B_GUIDANCE, QC_VERDICTS, DISTILL_CHATML, FUSED_SFT_CHECKPOINT),
        use_user_code_server=True,  # RelearnDue is Python of ours: it runs in the code server, not the daemon
        run_tags={TRIGGER_TAG: "relearn_automation"},
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=INTERVAL_S,
    )
