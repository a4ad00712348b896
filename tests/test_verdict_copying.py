"""The verdict contract's "cite 图片_i, never copy a summary", in GRPO's format reward and in
distillation's filter, and the GRPO proposal's defaults (last K = 4 blocks, label 1.0 / format 0.2).

The summaries are written the way Stage-A writes them for a BBU wind-baffle group."""

import pytest

from qc_assets.distill.config import DistillConfig
from qc_assets.distill.select import judge_answers, preference_pairs
from qc_assets.missions import get_mission
from qc_assets.stage_b.filters import reason_copies_summary
from qc_assets.stage_b.guidance import Guidance
from qc_assets.student.grpo import reward_funcs_for
from qc_assets.student.grpo_cli import build_parser, config_from_args
from qc_assets.student.grpo_dataset import build_grpo_dataset
from qc_assets.student.preference_config import GRPORunConfig
from qc_assets.student.rewards import FormatReward, LabelReward

SUMMARIES = [
    "BBU机框安装于机柜第3层，前面板螺丝齐全，右侧两个空槽位未安装挡风板",
    "机柜下部挡风板松动，边缘有缝隙，线缆沿走线架绑扎整齐",
    "设备铭牌清晰，标签为BBU5900，接地线已连接",
]
OWN_WORDS = "不通过\n理由: 图片_1 中两个空槽位缺少挡风板，图片_2 挡风板松动"
COPIED = "不通过\n理由: 图片_1 BBU机框安装于机柜第3层，前面板螺丝齐全，右侧两个空槽位未安装挡风板"
COPIED_SPAN = "不通过\n理由: 机柜下部挡风板松动，边缘有缝隙，需整改"  # 13 characters verbatim from 图片_2


@pytest.mark.parametrize(
    "reason, copies",
    [
        ("图片_1 中两个空槽位缺少挡风板，图片_2 挡风板松动", False),
        ("空槽位未安装挡风板", False),  # a 9-character span: the defect's name, not a copy
        (SUMMARIES[0], True),  # the whole summary
        ("图片_2：机柜下部挡风板松动，边缘有缝隙，需整改", True),  # a 13-character span
        ("设备铭牌清晰，标签为BBU5900", True),  # 17 characters of 图片_3
    ],
)
def test_reason_copies_summary_threshold(reason, copies):
    assert reason_copies_summary(reason, SUMMARIES) is copies


def test_a_copying_reason_costs_the_format_reward_only():
    completions = [OWN_WORDS, COPIED, COPIED_SPAN]
    summaries = [SUMMARIES] * 3
    assert FormatReward(0.2)(completions, summaries=summaries, label=["fail"] * 3) == [0.2, 0.0, 0.0]
    assert LabelReward(1.0)(completions, summaries=summaries, label=["fail"] * 3) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="2 summary lists for 3 completions"):
        FormatReward(0.2)(completions, summaries=summaries[:2])


def test_the_grpo_dataset_carries_each_groups_summaries_for_the_reward():
    mission = get_mission("挡风板安装检查")
    rec = {
        "record_id": "r0",
        "group_id": "G1",
        "mission": mission.name,
        "label": "fail",
        "images": [f"{i}.jpg" for i in range(1, 12)],
        "per_image": {f"image_{i}": f"摘要{i}" for i in range(11, 0, -1)},
    }
    (row,) = build_grpo_dataset([rec], mission, Guidance.initial(mission))
    assert row["summaries"] == [f"摘要{i}" for i in range(1, 12)]  # image_10 after image_9


def test_distillation_filters_a_copying_answer_and_pairs_it_as_rejected():
    answers = [
        {
            "record_id": "r0",
            "group_id": "G1",
            "label": "fail",
            "sample": i,
            "seed": i,
            "raw": raw,
            "error": None,
            "finish_reason": "stop",
        }
        for i, raw in enumerate([COPIED, OWN_WORDS, COPIED_SPAN])
    ]
    judged = judge_answers(answers, DistillConfig(max_reason_chars=200), {"r0": SUMMARIES})
    assert [j.reason for j in judged] == ["copies_summary", None, "copies_summary"]
    pairs = preference_pairs(judged)
    assert [p.rejected.answer["sample"] for p in pairs] == [0, 2] and all(p.chosen.answer["sample"] == 1 for p in pairs)


def test_grpo_defaults_follow_the_proposal_and_are_configurable():
    cfg = GRPORunConfig()
    assert (cfg.lora.last_k, cfg.label_weight, cfg.format_weight) == (4, 1.0, 0.2)
    label, fmt = reward_funcs_for(GRPORunConfig(label_weight=2.0, format_weight=0.5))
    assert label([OWN_WORDS], label=["fail"]) == [2.0] and fmt([OWN_WORDS], summaries=[SUMMARIES]) == [0.5]
    args = build_parser().parse_args(
        [
            "--data-root",
            "d",
            "--out-dir",
            "o",
            "--model-path",
            "m",
            "--last-k",
            "2",
            "--label-weight",
            "1.5",
            "--format-weight",
            "0.3",
        ]
    )
    cli = config_from_args(args)
    assert (cli.lora.last_k, cli.label_weight, cli.format_weight) == (2, 1.5, 0.3)
    defaults = config_from_args(build_parser().parse_args(["--data-root", "d", "--out-dir", "o", "--model-path", "m"]))
    assert (defaults.lora.last_k, defaults.label_weight, defaults.format_weight) == (4, 1.0, 0.2)
    with pytest.raises(ValueError, match="format_weight must be > 0"):
        GRPORunConfig(format_weight=0.0)
