"""`verdict_model: student`: qc_verdicts answered by the promoted student checkpoint through the same
loader that serves Stage-A (`StudentChatLLM`), and a clear failure while no student was promoted.

The "promoted checkpoint" here is the tiny random-weight Qwen3-VL folder linked as
`fused_sft_checkpoint/current` (what a passing fusion run leaves there; tests/test_fusion_asset.py
promotes a real one): its answers are noise, so the test asserts the path, not the verdicts.
"""

import dagster as dg
import pytest
from support.verdicts import MISSION, guidance_versions, store_kept_guidance

from qc_assets.partitions import mission_partitions
from qc_assets.verdicts.assets import qc_verdicts
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.inbox import inbox_summaries
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.vlm.resource import VLMResource

STUDENT_RUN_CONFIG = {
    "ops": {"qc_verdicts": {"config": {"verdict_model": "student", "constrained": False, "max_new_tokens": 8}}}
}


def _run(instance, resources, assets, run_config=None):
    return dg.materialize(
        assets,
        partition_key=MISSION,
        instance=instance,
        resources=resources,
        run_config=run_config,
        raise_on_error=False,
    )


def test_student_judges_the_inbox_once_promoted_and_fails_clearly_before(tiny_vlm_dir, sample_images, tmp_path):
    data = tmp_path / "data"
    resources = {
        "storage": StorageResource(data_root=str(data), images_root=str(sample_images)),
        "vlm": VLMResource(model_path=str(tiny_vlm_dir)),
        "llm": LLMResource(),
    }
    store_kept_guidance(data, guidance_versions()[0])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [MISSION])
        assert _run(instance, resources, [inbox_summaries]).success

        before = _run(instance, resources, [qc_verdicts], STUDENT_RUN_CONFIG)
        assert not before.success
        failure = before.get_step_failure_events()[0].event_specific_data.error.message
        assert "needs a promoted student" in failure and "fused_sft_checkpoint" in failure

        (data / "fused_sft_checkpoint").mkdir(parents=True)
        (data / "fused_sft_checkpoint" / "current").symlink_to(tiny_vlm_dir, target_is_directory=True)
        after = _run(instance, resources, [qc_verdicts], STUDENT_RUN_CONFIG)
        assert after.success
        meta = {k: v.value for k, v in after.asset_materializations_for_node("qc_verdicts")[0].metadata.items()}
        assert meta["model_fingerprint"].startswith("student:")
        assert meta["dagster/row_count"] == 2 and meta["verdicts/llm_calls"] == 2


def test_student_refuses_the_regex_constraint_in_config():
    with pytest.raises(ValueError, match="constrained: false"):
        VerdictConfig(verdict_model="student", constrained=True)
    assert VerdictConfig(verdict_model="student", constrained=False).verdict_model == "student"
