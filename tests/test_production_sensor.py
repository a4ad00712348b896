"""`new_images_sensor` under the real daemon on Postgres: a new mission folder becomes a partition and
its Stage-A run is queued, dequeued and finished, with no test code in between."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
from support.services import production_deployment, wait_until
from support.stage_a_smoke import smoke_settings_file

pytestmark = pytest.mark.slow

MISSION = "BBU线缆布放要求"


def _sensor_runs(instance) -> list:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "new_images_sensor"})))


def test_daemon_sensor_adds_the_partition_of_a_new_mission_folder_and_runs_it(
    tmp_path, tiny_vlm_dir, _sample_images_master
):
    images = tmp_path / "images"
    images.mkdir()
    dep = production_deployment(
        tmp_path,
        {
            "QC_DATA_ROOT": str(tmp_path / "data"),
            "QC_IMAGES_ROOT": str(images),
            "QC_VLM_MODEL": str(tiny_vlm_dir),
            "QC_STAGE_A_CONFIG": smoke_settings_file(tmp_path),
        },  # sensor runs carry no run config
        executor="",
    )  # the default executor: this test is about the sensor, the daemon and Postgres
    try:
        with dep.instance() as instance:
            assert instance.get_dynamic_partitions("missions") == []
            # a mission folder arrives: one pass group and one fail group, copied from the sample set
            for label in ("审核通过", "审核不通过"):
                group = next(
                    p for p in sorted((_sample_images_master / "RRU安装检查" / label).iterdir()) if p.name != "G900"
                )
                shutil.copytree(group, images / MISSION / label / group.name)
            dep.daemon()
            wait_until(
                lambda: MISSION in instance.get_dynamic_partitions("missions"),
                240,
                f"the sensor to add partition {MISSION!r}",
                tuple(dep.procs),
            )
            wait_until(
                lambda: any(r.is_finished for r in _sensor_runs(instance)),
                480,
                f"the sensor's Stage-A run for {MISSION!r}",
                tuple(dep.procs),
            )
            runs = _sensor_runs(instance)
            assert [(r.tags["dagster/partition"], r.status) for r in runs] == [(MISSION, dg.DagsterRunStatus.SUCCESS)]
            materialization = instance.get_latest_materialization_event(dg.AssetKey("stage_a_summaries"))
            assert materialization.dagster_event.partition == MISSION
            assert materialization.asset_materialization.metadata["dagster/row_count"].value == 2
    finally:
        dep.stop()
