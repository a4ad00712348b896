"""`fused_sft_checkpoint` materialized on a real Dagster instance with the tiny Qwen3-VL student."""

import json

import dagster as dg
import pytest

from fusion_fixtures import MISSION, one_torch_thread, write_inputs  # noqa: F401
from qc_assets.fusion.assets import FusedSFTConfig, asset_checks, fused_sft_checkpoint
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl, read_jsonl
from resources.vlm.resource import VLMResource

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
OUT = "fused_sft_checkpoint"
# Small decode budgets: the tiny random model's answers are meaningless, only the code path matters.
SMALL_YAML = """
sources:
  - {name: stageb_teacher, type: distill_chatml, ratio: 0.5}
  - {name: stage_a_summary, type: stage_a_summaries, ratio: 0.5}
lora: {last_k: 1, max_steps: 4, batch_size: 2}
eval: {max_groups: 2, stage_a_images: 2, max_new_tokens: 6, tolerance: 1.0}
"""


def small_config(tmp_path, **overrides) -> FusedSFTConfig:
    path = tmp_path / "fusion.yaml"
    path.write_text(SMALL_YAML, encoding="utf-8")
    return FusedSFTConfig(config_file=str(path), **overrides)


def materialize(root, images, model_dir, config: FusedSFTConfig):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION])
        return dg.materialize(
            [fused_sft_checkpoint, *asset_checks], partition_key=MISSION, instance=instance,
            resources={"storage": StorageResource(data_root=str(root), images_root=str(images)),
                       "vlm": VLMResource(model_path=str(model_dir))},
            run_config=dg.RunConfig({OUT: config}), raise_on_error=False,
        )


def test_materialize_trains_evaluates_and_publishes(tmp_path, sample_images, tiny_vlm_dir):
    records = write_inputs(tmp_path, sample_images)
    held = [records[0]["record_id"], records[-1]["record_id"]]
    atomic_write_jsonl(tmp_path / "stage_b_guidance" / MISSION / "splits.jsonl", [{"run_id": "r1", "eval": held}])
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path, max_steps=6))
    assert result.success
    (mat,) = result.asset_materializations_for_node(OUT)
    meta = {k: v.value for k, v in mat.metadata.items()}
    out = tmp_path / OUT / MISSION
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer.json",
                 "processor_config.json", "fusion_report.json", "train_log.jsonl", "eval.json", "loss.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".staging-*"))
    report = json.loads((out / "fusion_report.json").read_text(encoding="utf-8"))
    ev = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert ev["held_out_records"] == held and "run r1" in ev["held_out_source"]
    assert ev["fused"]["stage_b/n_groups"] == 2 and ev["fused"]["stage_a/n_images"] == 2
    # held-out groups never reach training: one distill row dropped per held-out group
    held_groups = {r["group_id"] for r in records if r["record_id"] in held}
    n_held = sum(r["group_id"] in held_groups for r in records)  # a resubmitted group has two records
    assert report["dropped"]["stageb_teacher"] == {"held_out_group": n_held}
    assert meta["dagster/row_count"] == report["rows"] > 0
    assert meta["fusion/realised_ratio/stageb_teacher"] + meta["fusion/realised_ratio/stage_a_summary"] == \
        pytest.approx(1.0)
    assert meta["fusion/trainable_params"] == report["trainable_params"] > 0
    assert meta["fusion/adapter_bytes"] > 0 and meta["seed"] == 0 and meta["mission"] == MISSION
    assert meta["model_fingerprint"].startswith(tiny_vlm_dir.name)
    assert "| stage_b/verdict_accuracy |" in meta["eval_table"] and len(meta["preview"]) <= 500
    assert len(read_jsonl(out / "train_log.jsonl")) == 6 == meta["fusion/steps"]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"fused_sft_eval_gate", "fused_sft_adapter_loads"}
    assert all(c.passed for c in checks.values())


def test_missing_distill_still_trains_and_the_gate_check_follows_eval_json(tmp_path, sample_images, tiny_vlm_dir):
    write_inputs(tmp_path, sample_images, with_distill=False)
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path, max_steps=2))
    assert result.success
    (mat,) = result.asset_materializations_for_node(OUT)
    assert mat.metadata["empty_sources"].value == ["stageb_teacher"]
    assert "materialize distill_chatml" in mat.metadata["source_notes"].value["stageb_teacher"]
    assert mat.metadata["fusion/realised_ratio/stage_a_summary"].value == 1.0

    # a regressed checkpoint: the gate's verdict as published in eval.json decides the blocking check
    from qc_assets.fusion.assets import eval_gate_result
    from qc_assets.fusion.evaluate import regression_gate

    storage = StorageResource(data_root=str(tmp_path), images_root=str(sample_images))
    assert eval_gate_result(storage, MISSION).passed
    path = tmp_path / OUT / MISSION / "eval.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["fused"] = {**doc["base"], "stage_b/verdict_accuracy": doc["base"]["stage_b/verdict_accuracy"] - 0.5}
    doc["gate"] = regression_gate(doc["base"], doc["fused"], tolerance=0.05)
    path.write_text(json.dumps(doc), encoding="utf-8")
    failed = eval_gate_result(storage, MISSION)
    assert not failed.passed and failed.metadata["actual"].value == "failed: stage_b/verdict_accuracy"
    path.unlink()
    assert eval_gate_result(storage, MISSION).metadata["actual"].value == "missing"


def test_all_sources_empty_is_a_clear_failure(tmp_path, sample_images, tiny_vlm_dir):
    result = materialize(tmp_path, sample_images, tiny_vlm_dir, small_config(tmp_path, max_steps=1))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "every fusion source is empty" in failure.step_failure_data.error.message
    assert not (tmp_path / OUT / MISSION / "adapter").exists()


def test_a_failed_run_leaves_no_staging_and_keeps_the_published_checkpoint(tmp_path, sample_images, tiny_vlm_dir):
    import shutil

    from qc_assets.fusion.config import FusionConfig
    from qc_assets.fusion.runner import run_fusion

    write_inputs(tmp_path, sample_images)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    shutil.copy(tiny_vlm_dir / "config.json", broken / "config.json")  # config but no weights or tokenizer
    out = tmp_path / OUT / MISSION
    out.mkdir(parents=True)
    (out / "eval.json").write_text('{"previous": true}', encoding="utf-8")
    with pytest.raises(OSError):
        run_fusion(MISSION, FusionConfig(), data_root=tmp_path, images_root=sample_images, model_path=str(broken),
                   device="cpu", dtype="float32", out_dir=out, log=lambda m: None)
    assert not list(out.glob(".staging-*"))
    assert (out / "eval.json").read_text(encoding="utf-8") == '{"previous": true}'
