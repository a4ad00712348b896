"""Re-learning that triggers itself: which missions are due (drift, new labelled groups, cooldown), the
`relearn_due` automation condition evaluated by Dagster, and the re-learning run itself (from the kept
guidance, on a split where earlier groups keep their side), through the real OpenAI-compatible client
and `ScriptedRuleFollowingServer` (a named test double for a capable LLM)."""

from dataclasses import replace

import dagster as dg
from support.stage_b_data import CORRECT, GOOD, MISSION, group_record, keyword_records
from test_stage_b_learns import CONFIG, quiet

from qc_assets.partitions import mission_partitions
from qc_assets.stage_b.assets import stage_b_guidance
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.guidance import GuidanceStore
from qc_assets.stage_b.loop import live_after_test, run_stage_b
from qc_assets.stage_b.relearn import RelearnSettings, record_relearn, relearn_reason
from qc_assets.stage_b.split import previous_sides, split_three_way, sticky_three_way
from qc_assets.verdicts.config import VerdictConfig
from resources.store import atomic_write_json, atomic_write_jsonl, read_jsonl

RUST = {"op": "add", "text": "接地螺栓出现「锈蚀」的判为不通过"}
DRIFTED, STEADY = "BBU接地线检查", "RRU安装检查"


def rusty_records(first: int, n: int, mission: str = MISSION.name) -> list[dict]:
    """New submissions with a defect no earlier rule covers: every other group's bolt is rusty (fail)."""
    rows = []
    for g in range(first, first + n):
        gid, rusty = f"g{g:03d}", g % 2 == 0
        label = "fail" if rusty else "pass"
        texts = [GOOD[g % 3], "接地螺栓锈蚀，表面发红" if rusty else GOOD[(g + 1) % 3]]
        rows.append(group_record(mission, gid, label, texts))
    return rows


def test_a_sticky_split_keeps_every_earlier_group_on_its_side_and_splits_only_new_ones():
    old = keyword_records(60)
    first = split_three_way(old, 0.25, 0.25, seed=3)
    sides = previous_sides(first.to_dict(), old)
    again = sticky_three_way(old + rusty_records(100, 40), sides, 0.25, 0.25, seed=3)
    for side in ("train", "selection", "test"):
        earlier = {r["group_id"] for r in getattr(first, side)}
        assert earlier == {r["group_id"] for r in getattr(again, side) if r["group_id"] < "g100"}
        assert any(r["group_id"] >= "g100" for r in getattr(again, side)), f"new groups reach {side}"


def test_relearning_starts_from_the_kept_guidance_and_learns_the_new_defect(scripted_server, tmp_path):
    out = tmp_path / "stage_b_guidance"
    config = replace(CONFIG, min_test_groups=8)
    scripted_server.script_reflector([{"operations": [CORRECT]}])
    first = run_stage_b(keyword_records(60), MISSION, scripted_server.client(), config, out, log=quiet)
    assert first.kept_version == 1

    scripted_server.script_reflector([{"operations": [RUST]}])
    records = keyword_records(60) + rusty_records(100, 40)
    second = run_stage_b(records, MISSION, scripted_server.client(), replace(config, start_from="kept"), out, log=quiet)
    assert second.baseline_version == 1, "re-learning starts from the kept v1, not from v0"
    kept = GuidanceStore(out / "guidance").load(GuidanceStore(out / "guidance").pointer("best"))
    texts = [item.text for item in kept.items]
    assert CORRECT["text"] in texts and RUST["text"] in texts and kept.version == second.kept_version > 1
    assert second.test["conclusive"] and second.test["kept_accuracy"] > second.test["baseline_accuracy"]
    splits = read_jsonl(out / "splits.jsonl")
    assert set(splits[0]["test"]) <= set(splits[1]["test"]), "no earlier test group is chosen on now"


def test_a_relearning_worse_on_test_leaves_the_live_version_live():
    worse = {"conclusive": True, "ci_high": -0.05}
    assert live_after_test(StageBLoopConfig(start_from="kept"), worse) == "baseline"
    assert live_after_test(StageBLoopConfig(start_from="kept"), {**worse, "ci_high": 0.02}) == "kept"
    assert live_after_test(StageBLoopConfig(start_from="kept"), {"conclusive": False, "ci_high": -1}) == "kept"
    assert live_after_test(StageBLoopConfig(), worse) == "kept", "a first learning has no live version to keep"


# -- which missions are due, and what Dagster requests -------------------------------------------------------


def _mission_files(root, mission: str, agree: int, disagree: int, new_groups: int = 0) -> None:
    """A learned mission (splits, result.json with a conclusive test at 0.9) with its production reviews."""
    records = keyword_records(30, mission=mission)
    split = split_three_way(records, 0.25, 0.25, seed=0)
    stage_b = root / "stage_b_guidance" / mission
    atomic_write_jsonl(stage_b / "splits.jsonl", [{"run_id": "run-0001", **split.to_dict()}])
    atomic_write_json(
        stage_b / "result.json",
        {
            "run_id": "run-0001",
            "kept_version": 1,
            "test": {"conclusive": True, "n_groups": 40, "kept_accuracy": 0.9, "baseline_accuracy": 0.7},
        },
    )
    atomic_write_jsonl(
        root / "stage_a_summaries" / mission / "records.jsonl",
        records + rusty_records(100, new_groups, mission=mission),
    )
    verdicts = root / "qc_verdicts" / mission
    atomic_write_json(verdicts / "summary.json", {"config": VerdictConfig(window_reviews=50, min_reviews=20).to_dict()})
    atomic_write_jsonl(
        verdicts / "reviews.jsonl",
        [
            {
                "group_id": f"n{i}",
                "verdict": "pass",
                "reviewer_label": "pass" if i < agree else "fail",
                "agrees": i < agree,
                "needs_review": False,
                "guidance_version": 1,
                "first_seen_at": 1_000_000.0 + i,
            }
            for i in range(agree + disagree)
        ],
    )


def test_relearn_reason_says_why_and_respects_the_cooldown(tmp_path):
    from qc_assets.stage_b.automation import due_reason
    from resources.storage import StorageResource

    storage = StorageResource(data_root=str(tmp_path))
    _mission_files(tmp_path, DRIFTED, agree=25, disagree=25)
    _mission_files(tmp_path, STEADY, agree=48, disagree=2, new_groups=6)
    settings = RelearnSettings(relearn_after=10, cooldown_s=3600)
    assert due_reason(storage, DRIFTED, settings).startswith("drift: upper bound")
    assert due_reason(storage, STEADY, settings) is None, "6 new groups < relearn_after 10"
    assert due_reason(storage, STEADY, replace(settings, relearn_after=6)).startswith("new_groups: 6 labelled")
    record_relearn(tmp_path / "stage_b_guidance" / DRIFTED, "run-x", "drift")
    assert due_reason(storage, DRIFTED, settings) is None, "inside the cooldown"
    assert relearn_reason(tmp_path / "nowhere", [], {"drifted": True, "status": "x"}, settings) is None, (
        "never before a first learning"
    )


def test_dagster_requests_relearning_for_the_drifted_mission_only(tmp_path, monkeypatch):
    monkeypatch.setenv("QC_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("QC_RELEARN_AFTER", "10")
    _mission_files(tmp_path, DRIFTED, agree=25, disagree=25)
    _mission_files(tmp_path, STEADY, agree=48, disagree=2)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [DRIFTED, STEADY])
        from definitions import defs

        only = dg.AssetSelection.assets(stage_b_guidance)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=only)
        assert result.get_requested_partitions(stage_b_guidance.key) == {DRIFTED}

        record_relearn(tmp_path / "stage_b_guidance" / DRIFTED, "run-x", "drift")
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=only, cursor=result.cursor
        )
        assert again.total_requested == 0, "the cooldown holds a second drift back; no reviews, no request"


def test_the_student_follows_a_new_guidance_only_when_config_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("QC_DATA_ROOT", str(tmp_path))
    from definitions import defs

    only = dg.AssetSelection.assets("distill_chatml")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [DRIFTED])
        instance.report_runless_asset_event(dg.AssetMaterialization("distill_chatml", partition=DRIFTED))
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=only)
        instance.report_runless_asset_event(dg.AssetMaterialization("stage_b_guidance", partition=DRIFTED))
        off = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=only, cursor=first.cursor)
        assert off.total_requested == 0, "QC_RETRAIN_STUDENT unset: a new guidance retrains nothing"
        monkeypatch.setenv("QC_RETRAIN_STUDENT", "1")
        instance.report_runless_asset_event(dg.AssetMaterialization("stage_b_guidance", partition=DRIFTED))
        on = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=only, cursor=off.cursor)
        assert on.get_requested_partitions(dg.AssetKey("distill_chatml")) == {DRIFTED}
