"""GRPO reward functions over the Stage-B verdict parser's edge cases, and the dataset builder."""

import doctest
import pickle

import pytest

from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance
from qc_assets.student import rewards
from qc_assets.student.grpo_dataset import build_grpo_dataset

MISSION = "挡风板安装检查"

# (completion, well formed?, verdict)
CASES = [
    ("通过\n理由: 挡风板齐全", True, "pass"),
    ("不通过\n理由：空槽位缺少挡风板", True, "fail"),  # full-width colon
    ("  不通过  \r\n理由: 缺少挡风板\n", True, "fail"),  # surrounding whitespace, CRLF
    ("不通过", False, None),  # one line
    ("通过\n理由:", False, None),  # empty reason
    ("通过\n原因: 挡风板齐全", False, None),  # wrong prefix
    ("审核通过\n理由: 挡风板齐全", False, None),  # extra tokens on the verdict line
    ("不通过。\n理由: 缺少挡风板", False, None),
    ("通过\n理由: 挡风板齐全\n补充: 无", False, None),  # three lines
    ("通过\n理由: assistant 说挡风板齐全", False, None),  # role word leak
    ("通过\n理由: <|im_end|>挡风板齐全", False, None),  # special token leak
    ("通过\n理由: ok", False, None),  # no Chinese in the reason
    ("通过\n理由: 不通过", False, None),  # a verdict restated as the reason
    ("", False, None),
    (None, False, None),  # a failed generation
]


@pytest.mark.parametrize("completion, ok, verdict", CASES)
def test_rewards_follow_the_parser(completion, ok, verdict):
    assert rewards.format_reward([completion]) == [0.2 if ok else 0.0]
    for label in ("pass", "fail"):
        want = 1.0 if ok and verdict == label else 0.0
        assert rewards.label_reward([completion], label=[label]) == [want]


def test_substring_trap_and_format_gating():
    # 通过 is a substring of 不通过: a fail answer never earns the pass label, and vice versa
    assert rewards.label_reward(["不通过\n理由: 缺少挡风板"], label=["pass"]) == [0.0]
    # the right verdict in a malformed answer earns nothing
    assert rewards.label_reward(["不通过"], label=["fail"]) == [0.0]
    total = [
        a + b
        for a, b in zip(
            rewards.label_reward(["不通过\n理由: 缺少挡风板", "不通过"], label=["fail"] * 2),
            rewards.format_reward(["不通过\n理由: 缺少挡风板", "不通过"]),
            strict=True,
        )
    ]
    assert total == [1.2, 0.0]


def test_conversational_completions_and_bad_inputs():
    conv = [[{"role": "assistant", "content": "通过\n理由: 挡风板齐全"}]]
    assert rewards.label_reward(conv, label=["pass"]) == [1.0] and rewards.format_reward(conv) == [0.2]
    with pytest.raises(ValueError, match="2 labels for 1 completions"):
        rewards.label_reward(["通过\n理由: 好"], label=["pass", "fail"])
    with pytest.raises(ValueError, match="labels must be one of"):
        rewards.label_reward(["通过\n理由: 好"], label=["通过"])
    with pytest.raises(ValueError, match="needs the dataset's `label` column"):
        rewards.label_reward(["通过\n理由: 好"])
    with pytest.raises(ValueError, match="weight must be > 0"):
        rewards.FormatReward(0)


def test_reward_callables_have_stable_names_and_pickle():
    funcs = rewards.default_reward_funcs()
    assert [f.__name__ for f in funcs] == ["label_reward", "format_reward"]
    clone = pickle.loads(pickle.dumps(funcs[0]))
    assert clone(["通过\n理由: 挡风板齐全"], label=["pass"]) == [1.0] and clone.__name__ == "label_reward"
    assert doctest.testmod(rewards).failed == 0


def test_dataset_has_one_row_per_record_with_the_production_prompt():
    mission = get_mission(MISSION)
    guidance = Guidance.initial(mission)
    recs = [
        {
            "record_id": f"r{i}",
            "group_id": "G900" if i < 2 else f"G{i}",
            "mission": MISSION,
            "label": "fail" if i == 0 else "pass",
            "images": ["a.jpg"],
            "per_image": {"image_1": f"摘要{i}"},
        }
        for i in range(3)
    ]
    rows = build_grpo_dataset(list(reversed(recs)), mission, guidance)
    assert [r["record_id"] for r in rows] == ["r0", "r1", "r2"]
    assert [r["label"] for r in rows] == ["fail", "pass", "pass"] and {r["mission"] for r in rows} == {MISSION}
    from qc_assets.stage_b.prompts import build_messages

    assert rows[0]["prompt"] == build_messages(mission, guidance, recs[0])
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert "不通过" not in rows[0]["prompt"][1]["content"]  # the label never enters the prompt
    with pytest.raises(ValueError, match="appears twice"):
        build_grpo_dataset(recs + recs[:1], mission, guidance)
    with pytest.raises(ValueError, match="not '挡风板安装检查'"):
        build_grpo_dataset([{**recs[0], "mission": "BBU接地线检查"}], mission, guidance)
