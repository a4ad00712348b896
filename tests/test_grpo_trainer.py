"""TRL's GRPOTrainer and DPOTrainer on CPU with the tiny random-weight Qwen3-VL student: only LoRA
moves, the assets train on the train split only and evaluate on the held-out groups afterwards,
and a missing guidance is an error unless config says `guidance: initial`."""

import json
import re

import dagster as dg
import pytest
import torch
from support.fusion import MISSION, distill_rows, stage_a_records

from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance
from qc_assets.student.grpo_dataset import build_grpo_dataset
from qc_assets.student.preference_assets import assets, dpo_checkpoint, grpo_checkpoint
from qc_assets.student.preference_config import DPORunConfig, GRPORunConfig
from qc_assets.student.rewards import default_reward_funcs
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl, read_jsonl
from resources.training.lora_policy import is_vision_param
from resources.training.resource import StudentTrainingResource
from resources.training.spec import LoraTrainingSpec
from resources.training.student import VLStudent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
_CJK = re.compile(r"[\u4e00-\u9fff]")


def cjk_share(completions, **columns):
    """Share of CJK characters: a dense reward, so a random model's rollouts differ in reward and the
    policy gradient is non-zero (label/format rewards are all 0 for random weights)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [len(_CJK.findall(t)) / max(len(t), 1) for t in texts]


def test_grpo_two_steps_moves_only_lora(tiny_vlm_dir, tmp_path):
    from resources.training.sft_vl import load_student

    mission = get_mission(MISSION)
    recs = [
        {
            "record_id": f"r{i}",
            "group_id": f"g{i}",
            "mission": MISSION,
            "label": "pass" if i % 2 else "fail",
            "images": ["a.jpg"],
            "per_image": {"image_1": "挡风板齐全" if i % 2 else "缺少挡风板"},
        }
        for i in range(4)
    ]
    rows = build_grpo_dataset(recs, mission, Guidance.initial(mission))
    before = {n: p.detach().clone() for n, p in load_student(str(tiny_vlm_dir))[0].named_parameters()}
    cfg = GRPORunConfig(
        lora=LoraTrainingSpec(last_k=1, max_steps=2, batch_size=4, learning_rate=5e-3, warmup_ratio=0.0),
        num_generations=4,
        max_completion_length=6,
    )
    session = VLStudent(str(tiny_vlm_dir)).grpo(
        rows, cfg.lora, cfg.rollout(), default_reward_funcs() + [cjk_share], tmp_path, log=lambda m: None
    )
    steps = [h for h in session.extra["log_history"] if "loss" in h]
    assert len(steps) == 2
    for key in ("rewards/label_reward/mean", "rewards/format_reward/mean", "rewards/cjk_share/mean", "reward"):
        assert key in steps[0]
    assert all(".layers.1." in t for t in session.targets)
    after = dict(session.model.named_parameters())
    lora_b = [p for n, p in after.items() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "GRPO must update the LoRA matrices"
    base_after = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in after.items() if "lora_" not in n
    }
    vision = [n for n in before if is_vision_param(n)]
    assert vision and all(torch.equal(before[n], base_after[n]) for n in before)


def test_run_configs_validate():
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GRPORunConfig(num_generations=1)
    with pytest.raises(ValueError, match="lora.batch_size 3 must be a multiple of num_generations 2"):
        GRPORunConfig(lora=LoraTrainingSpec(batch_size=3))
    with pytest.raises(ValueError, match="guidance must be one of"):
        GRPORunConfig(guidance="latest")
    with pytest.raises(ValueError, match="DPO beta must be > 0"):
        DPORunConfig(beta=0)
    cfg = GRPORunConfig(max_completion_length=64, lora=LoraTrainingSpec(learning_rate=3e-5))
    assert (cfg.max_completion_length, cfg.lora.learning_rate) == (64, 3e-5)
    with pytest.raises(ValueError, match="student dtype must be one of"):
        VLStudent("/nonexistent", dtype="fp8")


def _inputs(root, images) -> list[dict]:
    records = stage_a_records(images)
    atomic_write_jsonl(root / "stage_a_summaries" / MISSION / "records.jsonl", records)
    rows = distill_rows(records)
    atomic_write_jsonl(root / "distill_chatml" / MISSION / "distill_chatml.jsonl", rows)
    wrong = {"pass": "不通过\n理由: 缺少挡风板", "fail": "通过\n理由: 挡风板齐全"}
    atomic_write_jsonl(
        root / "distill_chatml" / MISSION / "preference_pairs.jsonl",
        [
            {
                "group_id": r["group_id"],
                "mission": MISSION,
                "label": r["label"],
                "prompt": r["messages"][:-1],
                "chosen": [r["messages"][-1]],
                "rejected": [{"role": "assistant", "content": wrong[r["label"]]}],
            }
            for r in rows
        ],
    )
    held = [records[0]["record_id"], records[-1]["record_id"]]
    atomic_write_jsonl(root / "stage_b_guidance" / MISSION / "splits.jsonl", [{"run_id": "r1", "eval": held}])
    return records


def _materialize(asset, root, images, model_dir, config: dict):
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [asset],
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {asset.key.path[-1]: {"config": config}}},
            resources={
                "storage": StorageResource(data_root=str(root), images_root=str(images)),
                "student": StudentTrainingResource(model_path=str(model_dir)),
            },
        )


LORA = {"last_k": 1, "max_steps": 2, "learning_rate": 5e-3, "batch_size": 2}
SMALL = {"guidance": "initial", "lora": LORA, "eval_max_groups": 2, "eval_stage_a_images": 1, "eval_max_new_tokens": 4}


def test_grpo_asset_trains_on_the_train_split_and_evaluates_on_held_out(tmp_path, sample_images, tiny_vlm_dir):
    records = _inputs(tmp_path, sample_images)
    result = _materialize(
        grpo_checkpoint,
        tmp_path,
        sample_images,
        tiny_vlm_dir,
        {**SMALL, "num_generations": 2, "max_completion_length": 4},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("grpo_checkpoint")
    meta = {k: v.value for k, v in mat.metadata.items()}
    run_dir = tmp_path / "grpo_checkpoint" / "runs" / meta["run_id"]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    held_groups = {records[0]["group_id"], records[-1]["group_id"]}
    n_held = sum(r["group_id"] in held_groups for r in records)
    assert summary["train_rows"] == len(records) - n_held == meta["dagster/row_count"]
    assert summary["config"]["max_completion_length"] == 4 and summary["config"]["lora"]["learning_rate"] == 5e-3
    ev = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    assert ev["missions"][MISSION]["fused"]["stage_b/n_groups"] == 2
    assert (run_dir / "config.json").is_file() and (run_dir / "adapter" / "adapter_config.json").is_file()
    assert meta["guidance"] == {MISSION: "initial (config guidance: initial)"} and "grpo/steps" in meta
    assert len(read_jsonl(run_dir / "train_log.jsonl")) >= 2
    assert meta["grpo/reused"] is False

    # the same request again returns the same run; a changed config trains a new one
    again = _materialize(
        grpo_checkpoint,
        tmp_path,
        sample_images,
        tiny_vlm_dir,
        {**SMALL, "num_generations": 2, "max_completion_length": 4},
    )
    (mat,) = again.asset_materializations_for_node("grpo_checkpoint")
    assert mat.metadata["run_id"].value == meta["run_id"] and mat.metadata["grpo/reused"].value is True
    assert len(list((tmp_path / "grpo_checkpoint" / "runs").iterdir())) == 1
    changed = _materialize(
        grpo_checkpoint,
        tmp_path,
        sample_images,
        tiny_vlm_dir,
        {**SMALL, "num_generations": 2, "max_completion_length": 5},
    )
    (mat,) = changed.asset_materializations_for_node("grpo_checkpoint")
    assert mat.metadata["run_id"].value != meta["run_id"] and mat.metadata["grpo/reused"].value is False

    missing = _materialize(grpo_checkpoint, tmp_path, sample_images, tiny_vlm_dir, {**SMALL, "guidance": "best"})
    assert not missing.success
    assert not list((tmp_path / "grpo_checkpoint" / "runs").glob(".staging-*"))


NO_WARMUP = {**SMALL, "lora": {**LORA, "warmup_ratio": 0.0}}


def test_dpo_asset_trains_on_pairs_minus_held_out_groups(tmp_path, sample_images, tiny_vlm_dir):
    records = _inputs(tmp_path, sample_images)
    result = _materialize(dpo_checkpoint, tmp_path, sample_images, tiny_vlm_dir, NO_WARMUP)
    assert result.success
    (mat,) = result.asset_materializations_for_node("dpo_checkpoint")
    meta = {k: v.value for k, v in mat.metadata.items()}
    summary = json.loads((tmp_path / "dpo_checkpoint" / "runs" / meta["run_id"] / "summary.json").read_text())
    held_groups = {records[0]["group_id"], records[-1]["group_id"]}
    n_held = sum(r["group_id"] in held_groups for r in records)
    assert summary["train_pairs"] == len(records) - n_held and summary["dropped_held_out"] == {MISSION: n_held}
    assert summary["method"] == "dpo" and len(summary["losses"]) == 2
    assert any("rewards/margins" in h for h in summary["log_history"])
    assert f"| {MISSION} | stage_b/verdict_accuracy |" in meta["eval_table"]
    again = _materialize(dpo_checkpoint, tmp_path, sample_images, tiny_vlm_dir, NO_WARMUP)
    (mat,) = again.asset_materializations_for_node("dpo_checkpoint")
    assert mat.metadata["run_id"].value == meta["run_id"] and mat.metadata["dpo/reused"].value is True


def test_grpo_and_dpo_are_not_in_the_default_jobs():
    import definitions

    qc = definitions.defs.resolve_job_def("qc_pipeline").asset_layer.selected_asset_keys
    student = definitions.defs.resolve_job_def("student_job").asset_layer.selected_asset_keys
    assert not {a.key for a in assets} & (qc | student)
