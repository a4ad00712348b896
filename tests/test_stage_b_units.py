"""Split, prompts, reflection parsing, case selection, filters, re-proposal memory, config."""

import re

import pytest
from support.stage_b_data import keyword_records

from qc_assets.missions import get_mission
from qc_assets.stage_b.aggregate import GroupOutcome
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.filters import filter_ops
from qc_assets.stage_b.guidance import Guidance, RuleOp
from qc_assets.stage_b.prompts import build_messages, build_reflection_messages
from qc_assets.stage_b.reflection import parse_operations, select_cases
from qc_assets.stage_b.rollout import rollout_plan
from qc_assets.stage_b.split import split_groups, split_three_way

MISSION = get_mission("挡风板安装检查")


def record(i: int, label: str, group: str | None = None, **per_image) -> dict:
    return {
        "record_id": f"r{i:02d}",
        "group_id": group or f"g{i:02d}",
        "mission": MISSION.name,
        "label": label,
        "per_image": per_image or {"image_1": "机柜正面，挡风板齐全", "image_2": "机柜侧面"},
    }


def test_split_keeps_resubmissions_together_and_is_seeded():
    records = [record(i, "pass" if i % 2 else "fail") for i in range(20)]
    records += [record(20, "fail", group="resub"), record(21, "pass", group="resub")]
    train, held = split_groups(records, 0.3, seed=7)
    assert {r["record_id"] for r in train} | {r["record_id"] for r in held} == {r["record_id"] for r in records}
    sides = {r["group_id"]: "train" for r in train} | {r["group_id"]: "eval" for r in held}
    resub_sides = {("train" if r in train else "eval") for r in records if r["group_id"] == "resub"}
    assert len(resub_sides) == 1 and sides["resub"] in resub_sides
    assert {r["label"] for r in held} == {"pass", "fail"}  # stratified: both labels held out
    assert 5 <= len({r["group_id"] for r in held}) <= 7
    assert split_groups(records, 0.3, seed=7) == (train, held)
    assert split_groups(records, 0.3, seed=8) != (train, held)
    with pytest.raises(ValueError, match="unique record_id"):
        split_groups(records + [record(0, "pass")], 0.3, seed=0)


def test_three_way_split_is_seeded_stratified_disjoint_and_keeps_resubmissions_together():
    records = [record(i, "pass" if i % 2 else "fail") for i in range(40)]
    records += [record(40, "fail", group="resub"), record(41, "pass", group="resub")]
    split = split_three_way(records, 0.25, 0.25, seed=7)
    sides = {side: {r["group_id"] for r in getattr(split, side)} for side in ("train", "selection", "test")}
    assert not (sides["train"] & sides["selection"]) and not (sides["train"] & sides["test"])
    assert not (sides["selection"] & sides["test"])
    assert sum(len(getattr(split, s)) for s in sides) == len(records)
    for side in ("selection", "test"):
        assert {r["label"] for r in getattr(split, side)} == {"pass", "fail"}
        assert 9 <= split.group_count(side) <= 12
    assert split_three_way(records, 0.25, 0.25, seed=7) == split
    assert split_three_way(records, 0.25, 0.25, seed=8) != split
    # Tiny data: train keeps one group per stratum, selection is served before test.
    tiny = split_three_way([record(0, "pass"), record(1, "pass"), record(2, "fail")], 0.25, 0.25, seed=0)
    assert tiny.group_count("train") == 2 and tiny.group_count("selection") == 1 and not tiny.test


def test_production_prompt_never_contains_the_label_and_orders_images_numerically():
    g = Guidance.initial(MISSION)
    rec = record(1, "fail", **{f"image_{i}": f"第{i}张" for i in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9)})
    msgs = build_messages(MISSION, g, rec)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[G0]" in msgs[0]["content"] and MISSION.focus in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.index("图片2:") < user.index("图片10:")
    flipped = build_messages(MISSION, g, {**rec, "label": "pass"})
    assert flipped == msgs  # the label does not reach the prompt
    with pytest.raises(ValueError, match="image_1..image_2"):
        build_messages(MISSION, g, record(2, "pass", image_1="a", image_3="b"))


def test_parse_operations():
    ok = parse_operations(
        '好的：\n```json\n{"operations": [{"op": "add", "text": "螺丝缺失判不通过"},'
        ' {"op": "merge", "ids": ["G1", "g2"], "text": "合并"}, {"op": "remove", "id": "G0"}]}\n```'
    )
    assert ok.error is None
    assert [(o.op, o.ids) for o in ok.ops] == [("add", ()), ("merge", ("G1", "G2"))]
    assert len(ok.op_errors) == 1 and "G0" in ok.op_errors[0]
    for bad in ("not json at all", '{"operations": [', '"just a string"', None):
        parsed = parse_operations(bad)
        assert parsed.ops == () and parsed.error.startswith("invalid_json")


def outcome(i, label, predicted, n_pass, n_fail):
    total = n_pass + n_fail
    return GroupOutcome(f"r{i:02d}", f"g{i:02d}", label, predicted, max(n_pass, n_fail) / total, n_pass, n_fail, 0)


def test_select_cases_puts_mixed_errors_first_and_adds_contrast():
    outs = [
        outcome(0, "fail", "pass", 2, 0),
        outcome(1, "fail", "pass", 2, 1),
        outcome(2, "pass", "pass", 2, 0),
        outcome(3, "pass", "pass", 3, 1),
        outcome(4, "fail", "fail", 2, 0),
    ]
    records = {f"r{i:02d}": record(i, o.label) for i, o in enumerate(outs)}
    cases = select_cases(outs, records, {"r01": "摘要未见问题"}, batch_size=3, train_ids=set(records))
    assert [c["record_id"] for c in cases[:3]] == ["r01", "r00", "r03"]
    assert cases[0]["reason"] == "摘要未见问题" and not cases[0]["correct"]
    assert [c["record_id"] for c in cases[3:]] == ["r02"]  # a steady pass group contrasts the missed fails
    msgs = build_reflection_messages(MISSION, Guidance.initial(MISSION), cases, ["add  螺丝缺失"])
    assert "人工审核结果" not in msgs[1]["content"] and "不要再提出" in msgs[1]["content"]
    hinted = build_reflection_messages(MISSION, Guidance.initial(MISSION), cases, [], label_hint=True)
    assert "人工审核结果: 不通过" in hinted[1]["content"]


def test_filters_and_rejected_memory():
    g = Guidance.initial(MISSION).apply(RuleOp("add", text="挡风板螺丝缺失时判为不通过"), epoch=1)
    summaries = ["机柜正面，第三槽位空置未安装挡风板，右侧线缆杂乱无绑扎"]
    rejected = {RuleOp("add", text="挡风板松动时判为不通过。").signature()}
    ops = [
        RuleOp("add", text="第三槽位空置未安装挡风板，右侧线缆杂乱无绑扎"),  # copies a summary
        RuleOp("add", text="看不清时视情况而定"),  # hedge
        RuleOp("add", text="挡风板螺丝缺失时判为不通过"),  # duplicate of G1
        RuleOp("add", text="挡风板松动时判为不通过"),  # rejected before (punctuation differs)
        RuleOp("remove", ids=("S1",)),  # immutable
        RuleOp("add", text="图片2显示缺失则不通过"),  # case reference
        RuleOp("add", text="空槽位未装挡风板判为不通过"),  # fine
        RuleOp("add", text="空槽位未装挡风板判为不通过"),  # repeated within the batch
        RuleOp("add", text="<新规则>"),  # the prompt's example copied
        RuleOp("update", text="改写后的规则", ids=("G1",)),
    ]
    reasons = [why for _, why in filter_ops(ops, g, summaries, rejected)]
    assert reasons == [
        "copies_summary",
        "hedge",
        "duplicate",
        "previously_rejected",
        "invalid_target",
        "copies_summary",
        None,
        "duplicate",
        "placeholder",
        "placeholder",
    ]


def test_rejected_memory_catches_rewordings_and_other_op_kinds():
    g = Guidance.initial(MISSION).apply(RuleOp("add", text="挡风板螺丝缺失时判为不通过"), epoch=1)
    rejected = {RuleOp("add", text="挡风板松动或缺失时判为不通过").signature()}
    ops = [
        RuleOp("add", text="挡风板松动或缺失时应判为不通过"),  # reworded by one character
        RuleOp("update", text="挡风板松动或缺失时判为不通过", ids=("G1",)),  # same text as an update
        RuleOp("add", text="接地线未连接接地排判为不通过"),  # a different rule
    ]
    reasons = [why for _, why in filter_ops(ops, g, [], rejected)]
    assert reasons == ["previously_rejected", "previously_rejected", None]


def test_rollout_plan_pairs_seeds_and_collapses_greedy():
    plan = rollout_plan([(0.0, 1.0), (0.7, 0.9)], samples=3, seed=1)
    assert [(e.temperature, e.sample) for e in plan] == [(0.0, 0), (0.7, 0), (0.7, 1), (0.7, 2)]
    assert plan == rollout_plan([(0.0, 1.0), (0.7, 0.9)], samples=3, seed=1)
    assert len({e.seed for e in plan}) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"decode_grid": ()}, "decode_grid"),
        ({"decode_grid": ((0.5, 1.5),)}, "top_p"),
        ({"min_bootstrap_prob": 1.5}, "min_bootstrap_prob"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"selection_fraction": 0.5, "test_fraction": 0.5}, "leave train groups"),
        ({"decode_grid": ((0.0,),)}, "decode_grid"),
        ({"max_provider_failure_rate": 1.5}, "max_provider_failure_rate"),
        ({"samples": 0}, "samples"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StageBLoopConfig(**kwargs)
    assert StageBLoopConfig().label_hint is False


def test_benchmark_generator_is_seeded_and_hides_rules_behind_near_misses():
    from resources.doubles.rule_following_data import FAIL_PATTERNS, NEAR_MISS, generate

    records, stats = generate(40, noise=0.0, seed=3)
    assert (records, stats) == generate(40, noise=0.0, seed=3)
    assert stats["near_miss"] > 0 and stats["resubmission"] > 0 and sum(k.startswith("rule:") for k in stats) >= 3
    for rec in records:
        texts = list(rec["per_image"].values())
        has_defect = any(t.startswith(p.split("{")[0]) for t in texts for ps in FAIL_PATTERNS.values() for p in ps)
        assert (rec["label"] == "fail") == has_defect
        if any(t in NEAR_MISS for t in texts):
            assert rec["label"] == "pass"
    noisy, noisy_stats = generate(40, noise=0.5, seed=3)
    assert noisy_stats["noisy_label"] > 0


def test_reflection_shows_ground_truth_fail_reasons_for_train_groups_only():
    records = keyword_records(n_groups=30)
    for rec in records:  # Stage-A's add_gt_fail_reason: every fail group has the reviewers' reason
        rec["gt_fail_reason_text"] = f"原因-{rec['group_id']}" if rec["label"] == "fail" else None
    split = split_three_way(records, 0.3, 0.3, seed=0)
    by_id = {r["record_id"]: r for r in records}
    # the model got every fail group wrong, on every side: each would be a reflection case if it could be
    outs = {
        side: [GroupOutcome(r["record_id"], r["group_id"], r["label"], "pass", 1.0, 2, 0) for r in getattr(split, side)]
        for side in ("train", "selection", "test")
    }
    train_ids = {r["record_id"] for r in split.train}
    cases = select_cases(outs["train"], by_id, {}, batch_size=50, train_ids=train_ids)
    text = build_reflection_messages(MISSION, Guidance.initial(MISSION), cases, [])[1]["content"]
    shown = set(re.findall(r"人工不通过原因: 原因-(g\d+)", text))
    assert shown == {r["group_id"] for r in split.train if r["label"] == "fail"}
    held_out = {r["group_id"] for side in ("selection", "test") for r in getattr(split, side)}
    assert held_out and not shown & held_out
    for side in ("selection", "test"):  # a held-out group handed to reflection is refused, not shown
        with pytest.raises(ValueError, match="only see train groups"):
            select_cases(outs["train"] + outs[side], by_id, {}, batch_size=50, train_ids=train_ids)


def test_stage_b_metadata_lists_the_most_frequent_ground_truth_fail_reasons():
    from qc_assets.stage_b.assets import gt_reason_metadata

    records = keyword_records(n_groups=12)
    assert gt_reason_metadata(records) == {}  # Stage-A attached none: nothing to report
    fails = [r for r in records if r["label"] == "fail"]
    for i, rec in enumerate(fails):
        rec["gt_fail_reason_text"] = "挡风板松动" if i % 3 else "挡风板缺失"
    meta = gt_reason_metadata(records)
    assert meta["stage_b/fail_groups_with_gt_reason"] == len(fails)
    table = meta["gt_fail_reasons_top"].value
    assert table.index("挡风板松动") < table.index("挡风板缺失")  # most frequent first
