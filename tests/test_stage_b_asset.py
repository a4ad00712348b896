"""`stage_b_guidance` materialized on a real Dagster instance with the real embedded model."""

import json
import os

import dagster as dg
import pytest

from qc_assets.run_config import to_domain
from qc_assets.stage_b.assets import StageBConfig, stage_b_guidance
from qc_assets.stage_b.checks import asset_checks
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.guidance import load_guidance
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MISSION = "挡风板安装检查"

TINY = StageBConfig(
    epochs=1,
    decode_grid=[[0.0, 1.0]],
    samples=1,
    max_new_tokens=8,
    constrained=False,
    reflection_max_new_tokens=16,
    reflection_batch_size=2,
    rounds_per_epoch=1,
    bootstrap_samples=100,
)


def write_records(root, n_groups: int = 4) -> None:
    texts = {"pass": "空槽位挡风板齐全，安装到位", "fail": "两个空槽位缺少挡风板"}
    rows = []
    for i in range(n_groups):
        label = "fail" if i % 2 else "pass"
        rows.append(
            {
                "record_id": f"{MISSION}/{label}/g{i}",
                "group_id": f"g{i}",
                "mission": MISSION,
                "label": label,
                "images": [f"g{i}/1.jpg"],
                "per_image": {"image_1": texts[label]},
                "model_fingerprint": "test",
                "prompt_hash": "test",
                "decode": {},
            }
        )
    atomic_write_jsonl(root / "stage_a_summaries" / MISSION / "records.jsonl", rows)


def materialize(root, instance, config: StageBConfig):
    return dg.materialize(
        [stage_b_guidance, *asset_checks],
        partition_key=MISSION,
        instance=instance,
        resources={"storage": StorageResource(data_root=str(root)), "llm": LLMResource(batch_size=4, cpu_threads=1)},
        run_config=dg.RunConfig({"stage_b_guidance": config}),
        raise_on_error=False,
    )


def test_missing_stage_a_records_fail_with_a_clear_message(tmp_path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION])
        result = materialize(tmp_path, instance, TINY)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "materialize stage_a_summaries" in failure.step_failure_data.error.message


def test_bad_run_config_is_refused():
    with pytest.raises(ValueError, match="min_bootstrap_prob"):
        to_domain(StageBConfig(min_bootstrap_prob=2.0), StageBLoopConfig)


@pytest.mark.slow
def test_materialize_stage_b_guidance_with_embedded_model(tmp_path):
    write_records(tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION])
        result = materialize(tmp_path, instance, TINY)
        assert result.success
        (mat,) = result.asset_materializations_for_node("stage_b_guidance")
        meta = mat.metadata
        out = tmp_path / "stage_b_guidance" / MISSION
        assert meta["dagster/row_count"].value == len(load_guidance(out, "best").items) >= 3
        assert meta["mission"].value == MISSION and meta["seed"].value == 0
        assert meta["stage_b/llm_calls"].value >= 5 and meta["stage_b/completion_tokens"].value > 0
        assert "| epoch |" in meta["epochs"].value and "[G0]" in meta["preview"].value
        assert len(meta["preview"].value) <= 500
        assert os.path.exists(meta["accuracy_plot_path"].value)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {"stage_b_guidance_schema", "stage_b_not_worse_than_baseline", "stage_b_converged"}
        assert checks["stage_b_guidance_schema"].passed and checks["stage_b_not_worse_than_baseline"].passed
        saved = json.loads((out / "result.json").read_text(encoding="utf-8"))
        assert checks["stage_b_converged"].passed == (saved["stop_reason"] == "converged")
        assert checks["stage_b_converged"].metadata["actual"].value == saved["stop_reason"]
        assert saved["kept_selection_accuracy"] == meta["stage_b/selection_accuracy"].value
        # Four groups leave no test side worth a number: the metadata says so instead.
        assert meta["stage_b/test_conclusive"].value is False and "test_note" in meta
        assert "stage_b/test_kept_accuracy" not in meta
