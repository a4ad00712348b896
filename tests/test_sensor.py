"""The scalable images sensor on a real Dagster instance: partitions, run requests per kind of change,
and the cursor (dg.build_sensor_context)."""

import json
import shutil

import dagster as dg
from support.verdicts import guidance_versions, store_kept_guidance

from qc_assets.partitions import mission_partitions
from qc_assets.sensors import new_images_sensor
from qc_assets.stage_a.discovery import INBOX_FOLDER
from qc_assets.stage_a.jobs import stage_a_job
from qc_assets.stage_a.watch import changed_parts, scan
from qc_assets.verdicts.jobs import inbox_job
from resources.storage import StorageResource

MISSIONS = ["BBU接地线检查", "RRU安装检查", "挡风板安装检查"]


def _tick(instance, storage, cursor=None):
    return new_images_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage}))


def _requests(result):
    return sorted((r.partition_key, r.job_name) for r in result.run_requests)


def _copy_photo(sample_images, mission, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((sample_images / mission / "审核通过" / "G100" / "1.jpg").read_bytes())


def test_sensor_adds_partitions_and_requests_the_right_job_per_change(sample_images, tmp_path):
    storage = StorageResource(data_root=str(tmp_path / "data"), images_root=str(sample_images))
    (sample_images / "未登记任务").mkdir()
    (sample_images / "RRU位置检查" / "审核通过").mkdir(parents=True)  # registered, no inbox folder
    with dg.instance_for_test() as instance:
        first = _tick(instance, storage)
        added = first.dynamic_partitions_requests[0].partition_keys
        assert sorted(added) == sorted([*MISSIONS, "RRU位置检查"])
        assert _requests(first) == sorted(
            [(m, stage_a_job.name) for m in [*MISSIONS, "RRU位置检查"]] + [(m, inbox_job.name) for m in MISSIONS]
        )
        # no kept guidance yet: the inbox is summarised now and judged once Stage-B has run
        assert {tuple(r.asset_selection) for r in first.run_requests if r.job_name == inbox_job.name} == {
            (dg.AssetKey("inbox_summaries"),)
        }
        assert "未登记任务" not in json.loads(first.cursor)["missions"]
        instance.add_dynamic_partitions(mission_partitions.name, added)

        unchanged = _tick(instance, storage, first.cursor)
        assert unchanged.run_requests == [] and unchanged.dynamic_partitions_requests == []
        assert json.loads(unchanged.cursor)["missions"] == json.loads(first.cursor)["missions"]

        _copy_photo(sample_images, "RRU安装检查", sample_images / "RRU安装检查" / "审核通过" / "G321" / "1.jpg")
        labelled = _tick(instance, storage, first.cursor)
        assert _requests(labelled) == [("RRU安装检查", stage_a_job.name)]
        assert labelled.dynamic_partitions_requests == []
        before = json.loads(first.cursor)["missions"]["RRU安装检查"]
        after = json.loads(labelled.cursor)["missions"]["RRU安装检查"]
        assert before["审核通过"] != after["审核通过"] and before[INBOX_FOLDER] == after[INBOX_FOLDER]

        store_kept_guidance(tmp_path / "data", guidance_versions("BBU接地线检查")[0])
        _copy_photo(sample_images, "BBU接地线检查", sample_images / "BBU接地线检查" / INBOX_FOLDER / "N777" / "1.jpg")
        inbox = _tick(instance, storage, labelled.cursor)
        assert _requests(inbox) == [("BBU接地线检查", inbox_job.name)]
        assert inbox.run_requests[0].asset_selection is None  # guidance exists: summaries and verdicts

        # a new photo in an existing group changes only that group folder's mtime
        _copy_photo(sample_images, "挡风板安装检查", sample_images / "挡风板安装检查" / "审核不通过" / "G150" / "9.jpg")
        assert _requests(_tick(instance, storage, inbox.cursor)) == [("挡风板安装检查", stage_a_job.name)]


def test_a_reviewed_inbox_group_requests_both_jobs_and_an_old_cursor_rescans(sample_images, tmp_path):
    storage = StorageResource(data_root=str(tmp_path / "data"), images_root=str(sample_images))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, MISSIONS)
        first = _tick(instance, storage)
        mission = sample_images / "RRU安装检查"
        shutil.move(mission / INBOX_FOLDER / "N500", mission / "审核通过" / "N500")
        moved = _tick(instance, storage, first.cursor)
        assert _requests(moved) == [("RRU安装检查", inbox_job.name), ("RRU安装检查", stage_a_job.name)]
        # a cursor written by the earlier sensor (one hash per mission) is read as "everything changed"
        old = json.dumps({m: "0123456789abcdef" for m in MISSIONS})
        assert len(_tick(instance, storage, old).run_requests) == 2 * len(MISSIONS)


def test_an_edit_inside_an_old_group_is_found_by_the_budgeted_sweep(sample_images):
    """With a budget of one group folder per tick, an idle tick stats about one group; a photo added to
    an existing group is found once the rotation reaches its folder, and within one full rotation."""
    state, swept, stats = scan(sample_images, {}, "", sweep_budget=1)
    assert stats > 10  # the first tick scans every folder once
    folders = sum(1 for m in state.values() for k, v in m.items() if v[1] > 0)
    state, swept, stats = scan(sample_images, state, swept, sweep_budget=1)
    assert stats <= 4  # one folder swept (a folder holds a few groups), nothing else
    _copy_photo(sample_images, "RRU安装检查", sample_images / "RRU安装检查" / "审核不通过" / "G150" / "7.jpg")
    for _ in range(folders):
        new_state, swept, _ = scan(sample_images, state, swept, sweep_budget=1)
        changed = {m: changed_parts(state[m], new_state[m]) for m in new_state}
        if any(changed.values()):
            assert changed == {m: (["labelled"] if m == "RRU安装检查" else []) for m in new_state}
            break
        state = new_state
    else:
        raise AssertionError(f"the edit was not found within {folders} ticks")
