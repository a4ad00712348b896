import json

import pytest

from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import (
    Guidance,
    GuidanceStore,
    RuleOp,
    load_guidance,
    rule_sort_key,
    sort_rule_ids,
)

MISSION = get_mission("挡风板安装检查")


def test_rule_ids_sort_numerically():
    ids = ["G10", "S2", "G2", "G0", "S10", "G1", "S1"]
    assert sort_rule_ids(ids) == ["G0", "S1", "S2", "S10", "G1", "G2", "G10"]
    assert sorted(["G10", "G2"]) == ["G10", "G2"]  # the string sort the earlier system used
    with pytest.raises(ValueError, match="G<n> or S<n>"):
        rule_sort_key("X3")


def test_initial_guidance_has_focus_and_scaffold():
    g = Guidance.initial(MISSION)
    assert [it.id for it in g.items] == ["G0"] + [f"S{i}" for i in range(1, len(MISSION.scaffold_rules) + 1)]
    assert g.get("G0").text == MISSION.focus
    assert g.learned == ()


def _grow(g: Guidance, n: int) -> Guidance:
    for i in range(n):
        g = g.apply(RuleOp("add", text=f"规则{i}：螺丝缺失判为不通过"), epoch=1, groups=[f"g{i}"])
    return g


def test_items_stay_in_numeric_order_past_ten():
    g = _grow(Guidance.initial(MISSION), 11)
    learned = [it.id for it in g.learned]
    assert learned == [f"G{i}" for i in range(1, 12)]
    assert "G10" in g.to_markdown() and g.to_markdown().index("| G2 |") < g.to_markdown().index("| G10 |")


def test_ops_update_remove_merge_and_ids_never_reused():
    g = _grow(Guidance.initial(MISSION), 3)
    g = g.apply(RuleOp("update", text="接地线缺失判为不通过", ids=("G2",)), epoch=2, groups=["gx"], hits=2)
    assert g.get("G2").text == "接地线缺失判为不通过" and g.get("G2").groups == ("g1", "gx")
    assert g.get("G2").hits == 2 and g.get("G2").epoch == 2
    g = g.apply(RuleOp("remove", ids=("G3",)), epoch=2)
    assert [it.id for it in g.learned] == ["G1", "G2"]
    g = g.apply(RuleOp("add", text="标签缺失判为不通过"), epoch=2)
    assert [it.id for it in g.learned] == ["G1", "G2", "G4"]  # G3 is not reused
    g = g.apply(RuleOp("merge", text="螺丝或接地线缺失判为不通过", ids=("G1", "G2")), epoch=3)
    assert [it.id for it in g.learned] == ["G4", "G5"]
    assert set(g.get("G5").groups) == {"g0", "g1", "gx"}


@pytest.mark.parametrize(
    "op, match",
    [
        (RuleOp("remove", ids=("G0",)), "learned rules"),
        (RuleOp("update", text="新焦点", ids=("S1",)), "learned rules"),
        (RuleOp("remove", ids=("G7",)), "not in guidance"),
        (RuleOp("add", text="  "), "non-empty text"),
        (RuleOp("merge", text="合并", ids=("G1", "G1")), "two or more"),
        (RuleOp("rewrite", text="全部重写"), "op must be one of"),
    ],
)
def test_forbidden_ops(op, match):
    g = _grow(Guidance.initial(MISSION), 1)
    with pytest.raises(ValueError, match=match):
        g.apply(op, epoch=1)


def test_store_versions_pointers_and_idempotent_commit(tmp_path):
    store = GuidanceStore(tmp_path / "guidance")
    v0 = store.commit(Guidance.initial(MISSION), parent=None, change=None)
    op = RuleOp("add", text="螺丝缺失判为不通过")
    v1 = store.commit(v0.apply(op, epoch=1), parent=0, change=op.to_dict(), stats={"gate": {"fixed": 2}})
    assert (v0.version, v1.version) == (0, 1)
    assert (tmp_path / "guidance" / "v0001.json").exists()
    # A replayed run commits the same change again: the existing version is returned, no fork.
    again = store.commit(v0.apply(op, epoch=1), parent=0, change=op.to_dict())
    assert again.version == 1 and store.versions() == [0, 1]
    store.set_pointer("current", 1)
    store.set_pointer("best", 0, eval_accuracy=0.5)
    assert load_guidance(tmp_path).version == 1
    assert load_guidance(tmp_path / "guidance", "best").version == 0
    snap = json.loads((tmp_path / "guidance" / "v0001.json").read_text(encoding="utf-8"))
    assert snap["parent"] == 0 and snap["change"]["text"] == "螺丝缺失判为不通过"
    assert Guidance.from_dict(snap["guidance"]) == v1
    with pytest.raises(ValueError, match="no 'best' guidance pointer"):
        load_guidance(tmp_path / "elsewhere", "best")


def test_invalid_guidance_is_refused():
    with pytest.raises(ValueError, match="G0"):
        Guidance(mission="m", items=())
