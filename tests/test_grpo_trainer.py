"""TRL's GRPOTrainer for 2 steps on CPU with the tiny random-weight Qwen3-VL student (text-only prompts)."""

import re

import pytest
import torch

from fusion_fixtures import one_torch_thread  # noqa: F401
from qc_assets.fusion.policy import is_vision_param
from qc_assets.grpo.dataset import build_grpo_dataset
from qc_assets.grpo.rewards import default_reward_funcs
from qc_assets.grpo.trainer import GRPORunConfig, train_grpo
from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
MISSION = "挡风板安装检查"
_CJK = re.compile(r"[\u4e00-\u9fff]")


def cjk_share(completions, **columns):
    """Share of CJK characters: a dense reward, so a random model's rollouts differ in reward and the
    policy gradient is non-zero (label/format rewards are all 0 for random weights)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [len(_CJK.findall(t)) / max(len(t), 1) for t in texts]


def test_grpo_two_steps_moves_only_lora(tiny_vlm_dir, tmp_path):
    from resources.training.lora_sft_vl import load_student

    mission = get_mission(MISSION)
    recs = [{"record_id": f"r{i}", "group_id": f"g{i}", "mission": MISSION, "label": "pass" if i % 2 else "fail",
             "images": ["a.jpg"], "per_image": {"image_1": "挡风板齐全" if i % 2 else "缺少挡风板"}} for i in range(4)]
    rows = build_grpo_dataset(recs, mission, Guidance.initial(mission))
    model, processor = load_student(str(tiny_vlm_dir))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = GRPORunConfig(last_k=1, max_steps=2, batch_size=4, num_generations=4, max_completion_length=6,
                        learning_rate=5e-3)
    out = train_grpo(model, processor, rows, cfg, tmp_path / "grpo", reward_funcs=default_reward_funcs() + [cjk_share])
    steps = [h for h in out["log_history"] if "loss" in h]
    assert len(steps) == 2
    for key in ("rewards/label_reward/mean", "rewards/format_reward/mean", "rewards/cjk_share/mean", "reward"):
        assert key in steps[0]
    assert all(".layers.1." in t for t in out["targets"])
    after = dict(out["model"].named_parameters())
    lora_b = [p for n, p in after.items() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "GRPO must update the LoRA matrices"
    base_after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                  for n, p in after.items() if "lora_" not in n}
    vision = [n for n in before if is_vision_param(n)]
    assert vision and all(torch.equal(before[n], base_after[n]) for n in before)


def test_grpo_config_validation():
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GRPORunConfig(num_generations=1)
    with pytest.raises(ValueError, match="batch_size 3 must be a multiple of num_generations 2"):
        GRPORunConfig(batch_size=3)


def test_run_grpo_for_mission_reads_stage_a_and_saves_the_adapter(tiny_vlm_dir, tmp_path):
    import json

    from resources.store import atomic_write_jsonl

    recs = [{"record_id": f"r{i}", "group_id": f"g{i}", "mission": MISSION, "label": "pass",
             "images": ["a.jpg"], "per_image": {"image_1": "挡风板齐全"}} for i in range(2)]
    atomic_write_jsonl(tmp_path / "stage_a_summaries" / MISSION / "records.jsonl", recs)
    from qc_assets.grpo.trainer import run_grpo_for_mission

    cfg = GRPORunConfig(last_k=1, max_steps=1, batch_size=2, num_generations=2, max_completion_length=4)
    summary = run_grpo_for_mission(tmp_path, MISSION, str(tiny_vlm_dir), cfg, tmp_path / "out")
    assert summary["guidance_version"] == 0 and summary["mission"] == MISSION
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    saved = json.loads((tmp_path / "out" / "grpo_summary.json").read_text(encoding="utf-8"))
    assert "rewards/label_reward/mean" in saved["log_history"][0]
    with pytest.raises(ValueError, match="materialize stage_a_summaries"):
        run_grpo_for_mission(tmp_path, "BBU接地线检查", str(tiny_vlm_dir), cfg, tmp_path / "out2")
