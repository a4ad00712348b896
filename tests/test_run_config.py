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
