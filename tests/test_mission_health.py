"""`mission_health`: one row per mission, written as parquet and shown as a table, refreshed by
declarative automation when any mission's verdicts or guidance change."""

import dagster as dg
import polars as pl
from test_stage_b_relearn import DRIFTED, STEADY, _mission_files

from qc_assets.partitions import mission_partitions
from qc_assets.stage_b.relearn import record_relearn
from qc_assets.verdicts.health import sparkline, weekly_agreement
from qc_assets.verdicts.health_assets import mission_health
from resources.storage import StorageResource


def test_one_row_per_mission_with_drift_relearning_and_test_accuracy(tmp_path):
    _mission_files(tmp_path, DRIFTED, agree=25, disagree=25)
    _mission_files(tmp_path, STEADY, agree=48, disagree=2)
    record_relearn(tmp_path / "stage_b_guidance" / DRIFTED, "run-x", "drift: upper bound 0.63 < baseline 0.9")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [DRIFTED, STEADY])
        result = dg.materialize(
            [mission_health], instance=instance, resources={"storage": StorageResource(data_root=str(tmp_path))}
        )
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    rows = {r["mission"]: r for r in pl.read_parquet(tmp_path / "mission_health" / "health.parquet").to_dicts()}
    assert rows[DRIFTED]["drifted"] and not rows[STEADY]["drifted"] and meta["missions_drifted"].value == 1
    assert rows[DRIFTED]["agreement"] == 0.5 and rows[DRIFTED]["window_reviews"] == 50
    assert rows[DRIFTED]["last_relearn_reason"].startswith("drift") and rows[STEADY]["last_relearn_at"] is None
    assert (
        rows[STEADY]["test_accuracy"] == 0.9
        and rows[STEADY]["test_interval"][0] < 0.9 < rows[STEADY]["test_interval"][1]
    )
    table = meta["health"].value
    assert DRIFTED in table and "drift: upper bound" in table and "weekly_agreement_plot" in meta


def test_weekly_agreement_and_its_sparkline():
    week = 7 * 86400
    reviews = [{"first_seen_at": 1_700_000_000 + i * week // 3, "agrees": i % 3 != 0} for i in range(9)]
    weekly = weekly_agreement(reviews)
    assert sum(w["reviews"] for w in weekly) == 9 and len(sparkline(weekly)) == len(weekly)
    assert sparkline([]) == "-"


def test_a_new_verdict_table_requests_a_refresh(tmp_path, monkeypatch):
    monkeypatch.setenv("QC_DATA_ROOT", str(tmp_path))
    from definitions import defs

    only = dg.AssetSelection.assets(mission_health)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [DRIFTED])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=only)
        assert first.total_requested == 0, "no mission has verdicts or guidance yet"
        instance.report_runless_asset_event(dg.AssetMaterialization("qc_verdicts", partition=DRIFTED))
        changed = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=only, cursor=first.cursor
        )
        assert changed.total_requested == 1, "a mission's verdicts changed"
        instance.report_runless_asset_event(dg.AssetMaterialization("mission_health"))
        quiet = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=only, cursor=changed.cursor
        )
        assert quiet.total_requested == 0, "refreshed since; nothing changed upstream"
        instance.report_runless_asset_event(dg.AssetMaterialization("stage_b_guidance", partition=DRIFTED))
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=only, cursor=quiet.cursor
        )
        assert again.total_requested == 1, "a mission's guidance changed"
