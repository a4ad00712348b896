"""The Dagster run config derived from a stage's domain dataclass: same fields, defaults, help, validation."""

import dagster as dg
import pytest

from qc_assets.run_config import dagster_config, to_domain
from qc_assets.stage_b.config import StageBLoopConfig

StageBRunConfig = dagster_config(StageBLoopConfig)


def test_fields_defaults_and_help_come_from_the_dataclass():
    default = StageBLoopConfig()
    assert set(StageBRunConfig.model_fields) == set(default.to_dict())
    assert StageBRunConfig().model_dump() == default.to_dict()
    assert "max epochs" in StageBRunConfig.model_fields["epochs"].description


def test_run_config_round_trips_through_a_real_run():
    seen = {}

    @dg.asset
    def probe(config: StageBRunConfig) -> None:
        seen["config"] = to_domain(config, StageBLoopConfig)

    result = dg.materialize([probe], run_config={"ops": {"probe": {"config": {
        "epochs": 4, "decode_grid": [[0.0, 1.0], [0.7, 0.9]]}}}})
    assert result.success
    assert seen["config"].epochs == 4
    assert seen["config"].decode_grid == ((0.0, 1.0), (0.7, 0.9))


def test_the_dataclass_still_validates_run_config():
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        to_domain(StageBRunConfig(epochs=0), StageBLoopConfig)
    with pytest.raises(ValueError, match="decode_grid"):
        to_domain(StageBRunConfig(decode_grid=[[0.5, 1.5]]), StageBLoopConfig)


def test_stage_a_has_one_config_class_and_the_inbox_refuses_caps(tiny_vlm_dir, sample_images, tmp_path):
    from qc_assets.partitions import mission_partitions
    from qc_assets.stage_a.assets import StageASummariesConfig
    from qc_assets.stage_a.runner import StageAConfig
    from qc_assets.verdicts.inbox import InboxSummariesConfig, inbox_summaries
    from resources.storage import StorageResource
    from resources.vlm.resource import VLMResource

    assert StageASummariesConfig().model_dump() == to_domain(StageASummariesConfig(), StageAConfig).__dict__
    assert InboxSummariesConfig.model_fields.keys() == StageASummariesConfig.model_fields.keys()
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        to_domain(StageASummariesConfig(max_new_tokens=0), StageAConfig)
    resources = {"storage": StorageResource(data_root=str(tmp_path), images_root=str(sample_images)),
                 "vlm": VLMResource(model_path=str(tiny_vlm_dir))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, ["BBU接地线检查"])
        result = dg.materialize([inbox_summaries], partition_key="BBU接地线检查", instance=instance,
                                resources=resources, raise_on_error=False,
                                run_config={"ops": {"inbox_summaries": {"config": {"pass_cap": 1}}}})
    assert not result.success
    assert "never capped" in result.get_step_failure_events()[0].event_specific_data.error.to_string()
