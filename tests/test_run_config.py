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

    result = dg.materialize(
        [probe], run_config={"ops": {"probe": {"config": {"epochs": 4, "decode_grid": [[0.0, 1.0], [0.7, 0.9]]}}}}
    )
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
    resources = {
        "storage": StorageResource(data_root=str(tmp_path), images_root=str(sample_images)),
        "vlm": VLMResource(model_path=str(tiny_vlm_dir)),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, ["BBU接地线检查"])
        result = dg.materialize(
            [inbox_summaries],
            partition_key="BBU接地线检查",
            instance=instance,
            resources=resources,
            raise_on_error=False,
            run_config={"ops": {"inbox_summaries": {"config": {"pass_cap": 1}}}},
        )
    assert not result.success
    assert "never capped" in result.get_step_failure_events()[0].event_specific_data.error.to_string()


# One level of nesting: a dataclass-typed field (here the shared LoRA spec) becomes a nested dg.Config.


def test_a_nested_dataclass_becomes_a_nested_config_with_the_outer_defaults():
    from qc_assets.student.preference_config import GRPORunConfig
    from resources.training.spec import LoraTrainingSpec

    GRPOConfig = dagster_config(GRPORunConfig, "GRPOProbeConfig")
    nested = GRPOConfig.model_fields["lora"].annotation
    assert issubclass(nested, dg.Config) and set(nested.model_fields) == set(LoraTrainingSpec.__dataclass_fields__)
    assert "learning rate" in nested.model_fields["learning_rate"].description
    # the defaults are GRPORunConfig's (last_k 4), not the spec class's (last_k 2)
    assert GRPOConfig().model_dump()["lora"]["last_k"] == 4 and LoraTrainingSpec().last_k == 2
    assert to_domain(GRPOConfig(), GRPORunConfig) == GRPORunConfig()
    assert isinstance(to_domain(GRPOConfig(), GRPORunConfig).lora.projections, tuple)


def test_a_nested_run_config_round_trips_through_a_real_run():
    from qc_assets.student.preference_config import DPORunConfig

    DPOConfig = dagster_config(DPORunConfig, "DPOProbeConfig")
    seen = {}

    @dg.asset
    def probe(config: DPOConfig) -> None:
        seen["config"] = to_domain(config, DPORunConfig)

    result = dg.materialize(
        [probe], run_config={"ops": {"probe": {"config": {"beta": 0.2, "lora": {"r": 4, "projections": ["q_proj"]}}}}}
    )
    assert result.success
    cfg = seen["config"]
    assert (cfg.beta, cfg.lora.r, cfg.lora.projections, cfg.lora.max_steps) == (0.2, 4, ("q_proj",), 2)


def test_a_bad_nested_value_is_refused_naming_the_field():
    from qc_assets.run_config import from_mapping
    from qc_assets.student.preference_config import DPORunConfig

    DPOConfig = dagster_config(DPORunConfig, "DPOProbeConfig")
    with pytest.raises(ValueError, match=r"lora\.learning_rate must be > 0, got 0"):
        to_domain(DPOConfig(lora={"learning_rate": 0}), DPORunConfig)
    with pytest.raises(ValueError, match=r"lora\.dropout must be in \[0, 1\)"):
        to_domain(DPOConfig(lora={"dropout": 1.5}), DPORunConfig)
    with pytest.raises(ValueError, match=r"dpo: lora\.r: Input should be a valid integer"):
        from_mapping(DPORunConfig, {"lora": {"r": "eight"}}, "dpo")
    with pytest.raises(ValueError, match=r"dpo\.lora: unknown keys \['rank'\]"):
        from_mapping(DPORunConfig, {"lora": {"rank": 8}}, "dpo")

    # and Dagster refuses a wrong type before the run starts, naming the path
    @dg.asset
    def probe(config: DPOConfig) -> None:
        to_domain(config, DPORunConfig)

    with pytest.raises(dg.DagsterInvalidConfigError, match="lora"):
        dg.materialize([probe], run_config={"ops": {"probe": {"config": {"lora": {"r": "eight"}}}}})
    bad = dg.materialize(
        [probe], raise_on_error=False, run_config={"ops": {"probe": {"config": {"lora": {"max_steps": 0}}}}}
    )
    assert not bad.success
    error = bad.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "lora.max_steps must be an integer >= 1" in error


def test_two_levels_of_nesting_are_refused():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Inner:
        x: int = 1

    @dataclass(frozen=True)
    class Middle:
        inner: Inner = field(default_factory=Inner)

    @dataclass(frozen=True)
    class Outer:
        middle: Middle = field(default_factory=Middle)

    with pytest.raises(TypeError, match="one level only"):
        dagster_config(Outer)
