"""The production profile for real: Postgres storage, the queued run coordinator with the `gpu` pool
limit, run retries, the daemon, and Stage-A executed by real Celery workers (separate processes)
that take tasks from a real Redis broker. Nothing here is a stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import yaml
from support.services import PROD_INSTANCE_YAML, ROOT, VENV_BIN, Deployment, production_deployment, run_cli, wait_until
from support.stage_a_smoke import smoke_settings_file

from resources.store import read_jsonl

pytestmark = pytest.mark.slow

MISSIONS = ["BBU接地线检查", "RRU安装检查", "挡风板安装检查"]
KILL_MISSION = "RRU线缆"
SHARD_MISSION = "RRU位置检查"
TEACHER_KEY = "sk-qc-test-secret-7f3a9c"  # a secret only the environment knows
ASSET = "stage_a_summaries"
STEP = "stage_a_summaries.stage_a_shard[shard_0]"  # the gpu step of a one-shard Stage-A


def shard_step(shard: int) -> str:
    return f"{ASSET}.stage_a_shard[shard_{shard}]"


def overlapping(intervals: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """Pairs of (start, end, name) intervals that overlap in time."""
    ordered = sorted(intervals)
    return [(a[2], b[2]) for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1]]


def test_overlap_detector_finds_overlaps():
    assert overlapping([(0, 2, "a"), (1, 3, "b"), (3, 4, "c")]) == [("a", "b")]
    assert overlapping([(0, 1, "a"), (1, 2, "b")]) == []


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, tiny_vlm_dir):
    from qc_assets.cli.sample_data import write_sample_images

    tmp = tmp_path_factory.mktemp("prod-celery")
    images = write_sample_images(tmp / "images", groups_per_label=1)
    dep = production_deployment(
        tmp,
        {
            "QC_DATA_ROOT": str(tmp / "data"),
            "QC_IMAGES_ROOT": str(images),
            "QC_VLM_MODEL": str(tiny_vlm_dir),
            "QC_TEACHER_API_KEY": TEACHER_KEY,
            "QC_MODEL_RETRIES": "1",
            "QC_MODEL_RETRY_DELAY_S": "1",
            "QC_STAGE_A_CONFIG": smoke_settings_file(tmp),
        },
    )  # backfills carry no run config
    try:
        # this module drives runs itself; the sensor is tested with its own deployment
        _cli(dep, "sensor", "stop", "new_images_sensor")
        with dep.instance() as instance:
            instance.add_dynamic_partitions("missions", [*MISSIONS, KILL_MISSION, SHARD_MISSION])
        dep.daemon()
        dep.worker("gpu-node-1")
        dep.worker("gpu-node-2")
        yield dep
    finally:
        dep.stop()


def _cli(dep: Deployment, *args: str) -> str:
    out = run_cli([str(VENV_BIN / "dagster"), *args, "-w", "workspace.yaml"], dep.env)
    assert out.returncode == 0, f"dagster {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _runs(instance, **filters) -> list:
    return list(instance.get_runs(filters=dg.RunsFilter(**filters)))


def _all_finished(instance, runs_filter: dg.RunsFilter, n: int) -> bool:
    runs = list(instance.get_runs(filters=runs_filter))
    return len(runs) >= n and all(r.is_finished for r in runs)


def _step_intervals(instance, run_id: str, step: str) -> list[tuple[float, float, str]]:
    starts, ends = {}, {}
    for entry in instance.all_logs(
        run_id,
        of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE},
    ):
        if entry.step_key != step:
            continue
        (starts if entry.dagster_event_type == dg.DagsterEventType.STEP_START else ends)[entry.step_key] = (
            entry.timestamp
        )
    return [(starts[step], ends[step], run_id)] if step in starts and step in ends else []


def _engine_messages(instance, run_id: str) -> list[str]:
    return [
        e.dagster_event.message or e.user_message
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    ]


def test_backfill_runs_on_celery_workers_and_gpu_steps_never_overlap(deployment):
    _cli(deployment, "job", "backfill", "-j", "stage_a_job", "--partitions", ",".join(MISSIONS), "--noprompt")
    with deployment.instance() as instance:
        backfill_id = instance.get_backfills()[0].backfill_id
        runs_filter = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
        wait_until(
            lambda: _all_finished(instance, runs_filter, len(MISSIONS)),
            300,
            f"backfill {backfill_id} of {MISSIONS}",
            tuple(deployment.procs),
        )
        runs = list(instance.get_runs(filters=runs_filter))
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(MISSIONS)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]

        steps = [iv for r in runs for iv in _step_intervals(instance, r.run_id, STEP)]
        assert len(steps) == len(MISSIONS)
        assert overlapping(steps) == [], "two gpu-pool steps ran at once while the pool limit was 1"
        # the run queue alone would have let every run go at once: the gpu pool is what kept them apart
        profile = yaml.safe_load(PROD_INSTANCE_YAML.read_text(encoding="utf-8"))
        assert profile["concurrency"]["runs"]["max_concurrent_runs"] >= len(MISSIONS)
        assert profile["concurrency"]["pools"]["default_limit"] == 1
        for run in runs:
            messages = _engine_messages(instance, run.run_id)
            assert f'Submitting celery task for step "{STEP}" to queue "gpu".' in messages
            assert any(m.endswith(f"Executing steps {STEP} in celery worker") for m in messages), messages
            # the plan and the merge hold no GPU: they go to the default queue
            assert f'Submitting celery task for step "{ASSET}.stage_a_plan" to queue "dagster".' in messages


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _pool_process(proc) -> int:
    """The prefork pool process of a Celery worker, the one executing the step (not the celery main
    process, which survives and reports the lost task)."""
    (celery_main,) = _children(proc.popen.pid)  # dagster-celery runs `celery worker` as its only child
    pool = _children(celery_main)
    assert len(pool) == 1, f"expected one pool process under {proc.name} (--concurrency 1), found {pool}"
    return pool[0]


def _executing_host(instance, run_id: str, step: str = STEP) -> str | None:
    """The Celery worker that took a Stage-A step of a run, from its engine event."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata
        if entry.step_key == step and "Celery worker" in metadata:
            return metadata["Celery worker"].value
    return None


def test_worker_killed_mid_stage_a_is_retried_and_no_photo_is_summarised_twice(deployment):
    images = Path(deployment.env["QC_IMAGES_ROOT"])
    source = sorted((images / MISSIONS[1]).rglob("*.jpg"))[:4]
    total = 24  # enough photos that the kill lands in the middle of the step, even on a fast machine
    for n in range(total):
        dst = images / KILL_MISSION / "审核通过" / f"K{n // 4}" / f"{n % 4}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source[n % len(source)], dst)
    config = {
        "ops": {
            ASSET: {
                "config": {
                    "batch_size": 1,
                    "mode": "per_image",
                    "max_new_tokens": 32,
                    "max_truncated_share_blocking": 1.0,
                }
            }
        }
    }  # the smoke VLM never stops
    _cli(
        deployment,
        "job",
        "launch",
        "-j",
        "stage_a_job",
        "--config-json",
        json.dumps(config),
        "--tags",
        json.dumps({"dagster/partition": KILL_MISSION}),
    )
    log = Path(deployment.env["QC_DATA_ROOT"]) / ASSET / KILL_MISSION / "summaries.jsonl"

    def logged() -> int:
        return sum(1 for _ in log.open(encoding="utf-8")) if log.exists() else 0

    with deployment.instance() as instance:
        runs_filter = dg.RunsFilter(tags={"dagster/partition": KILL_MISSION})
        wait_until(
            lambda: bool(_runs(instance, tags={"dagster/partition": KILL_MISSION})),
            120,
            f"the {KILL_MISSION} run",
            tuple(deployment.procs),
        )
        first = _runs(instance, tags={"dagster/partition": KILL_MISSION})[0]
        wait_until(
            lambda: _executing_host(instance, first.run_id) is not None,
            300,
            f"a Celery worker to take {STEP} of run {first.run_id}",
            tuple(deployment.procs),
        )
        host = _executing_host(instance, first.run_id)
        worker = next(p for p in deployment.procs if p.name == f"celery-{host.split('@')[0]}")
        pool_process = _pool_process(worker)  # found before the photos start, so the kill comes right after one
        wait_until(
            lambda: logged() >= 1, 300, f"the first Stage-A photo of {KILL_MISSION} in {log}", tuple(deployment.procs)
        )
        os.kill(pool_process, signal.SIGKILL)
        killed_at = logged()
        assert killed_at < total, "Stage-A finished before the kill: give it more photos"

        wait_until(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs(filters=runs_filter)),
            300,
            f"a successful retry of the killed {KILL_MISSION} run",
            tuple(deployment.procs),
        )
        runs = _runs(instance, tags={"dagster/partition": KILL_MISSION})
        assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.FAILURE
        retry = next(r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS)
        assert retry.tags.get("dagster/parent_run_id") == first.run_id  # the daemon's run retry, not a new run
        event = instance.get_latest_materialization_event(dg.AssetKey(ASSET))
        assert (event.run_id, event.dagster_event.partition) == (retry.run_id, KILL_MISSION)
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        # the retry resumed: what the killed step had logged was reused, only the rest was generated
        assert meta["stage_a/images_reused"] >= killed_at >= 1
        assert meta["stage_a/images_reused"] + meta["stage_a/images_generated_this_run"] == total

    rows = [json.loads(line) for line in log.open(encoding="utf-8")]
    per_image = Counter((r["run_key"], r["image"], r["sha256"]) for r in rows)
    assert len(per_image) == total
    assert max(per_image.values()) == 1, [k for k, n in per_image.items() if n > 1]
    assert killed_at <= len(rows)


def test_secrets_never_reach_run_config_or_the_instance(deployment):
    secrets = {
        "Postgres password": deployment.env["DAGSTER_PG_PASSWORD"],
        "Redis password": deployment.env["QC_CELERY_BROKER"].split(":")[2].split("@")[0],
        "teacher API key": TEACHER_KEY,
    }
    with deployment.instance() as instance:
        runs = _runs(instance)
        assert runs, "run the backfill test first: there is no run to inspect"
        for run in runs:
            stored = json.dumps(run.run_config) + json.dumps(run.tags)
            # the event log is what the UI shows of a run: its messages and metadata
            events = " ".join(repr(e) for e in instance.all_logs(run.run_id))
            for what, value in secrets.items():
                assert value not in stored, f"{what} found in the stored run config of {run.run_id}"
                assert value not in events, f"{what} found in the event log of {run.run_id}"
    # the run worker did resolve them: runs reached Postgres and Redis, and the resource got its key
    env_check = subprocess.run(
        [
            str(VENV_BIN / "python"),
            "-c",
            "import definitions; r = definitions.defs.resources['teacher_llm'];"
            "print(type(r.api_key).__name__, r.api_key.get_value() == __import__('os').environ['QC_TEACHER_API_KEY'])",
        ],
        cwd=ROOT,
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert env_check.stdout.split() == ["EnvVar", "True"]


def test_gpu_pool_limit_is_raised_to_the_number_of_gpus_from_the_cli(deployment):
    """The documented way to size the pool: a per-pool limit in Postgres that overrides default_limit."""
    with deployment.instance() as instance:
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert (info.limit, info.using_default_limit) == (1, True)
        out = run_cli([str(VENV_BIN / "dagster"), "instance", "concurrency", "set", "gpu", "4"], deployment.env)
        assert out.returncode == 0, out.stderr
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert (info.limit, info.using_default_limit, info.slot_count) == (4, False, 4)


def _started_steps(instance, run_id: str) -> set[str]:
    return {e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}


def test_two_shards_on_two_workers_survive_a_killed_worker_with_nothing_redone(deployment, tiny_vlm):
    """Runs after the pool-limit test (file order), which raised the gpu pool to 4: both shards run at once."""
    from qc_assets.missions import get_mission
    from qc_assets.stage_a.runner import StageAConfig, run_stage_a

    images = Path(deployment.env["QC_IMAGES_ROOT"])
    source = sorted((images / MISSIONS[1]).rglob("*.jpg"))[:4]
    total = 32
    for n in range(total):
        dst = images / SHARD_MISSION / "审核通过" / f"S{n // 4}" / f"{n % 4}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source[n % len(source)], dst)
    settings = {
        "shards": 2,
        "sharding_mode": "per_image",
        "mode": "per_image",
        "batch_size": 1,
        "max_new_tokens": 24,
        "max_truncated_share_blocking": 1.0,
    }  # the smoke VLM never stops
    data = Path(deployment.env["QC_DATA_ROOT"]) / ASSET / SHARD_MISSION
    victim_log = data / "summaries.shard-1-of-2.jsonl"

    def logged(path: Path) -> int:  # complete rows, as the resume reads them (a torn last line is not one)
        return len(read_jsonl(path)) if path.exists() else 0

    with deployment.instance() as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").limit >= 2, "run the pool-limit test first"
        _cli(
            deployment,
            "job",
            "launch",
            "-j",
            "stage_a_job",
            "--config-json",
            json.dumps({"ops": {ASSET: {"config": settings}}}),
            "--tags",
            json.dumps({"dagster/partition": SHARD_MISSION}),
        )
        wait_until(
            lambda: bool(_runs(instance, tags={"dagster/partition": SHARD_MISSION})),
            120,
            f"the {SHARD_MISSION} run",
            tuple(deployment.procs),
        )
        first = _runs(instance, tags={"dagster/partition": SHARD_MISSION})[0]
        hosts = {}
        for shard in (0, 1):
            wait_until(
                lambda shard=shard: _executing_host(instance, first.run_id, shard_step(shard)) is not None,
                300,
                f"a Celery worker to take {shard_step(shard)}",
                tuple(deployment.procs),
            )
            hosts[shard] = _executing_host(instance, first.run_id, shard_step(shard))
        assert hosts[0] != hosts[1], f"both shards went to {hosts[0]}: the pool limit did not let them run at once"
        worker = next(p for p in deployment.procs if p.name == f"celery-{hosts[1].split('@')[0]}")
        pool_process = _pool_process(worker)
        wait_until(
            lambda: logged(victim_log) >= 1, 300, f"shard 1's first photo in {victim_log}", tuple(deployment.procs)
        )
        os.kill(pool_process, signal.SIGKILL)
        killed_at = logged(victim_log)

        runs_filter = dg.RunsFilter(tags={"dagster/partition": SHARD_MISSION})
        wait_until(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs(filters=runs_filter)),
            420,
            f"a successful retry of the killed {SHARD_MISSION} run",
            tuple(deployment.procs),
        )
        retry = next(
            r
            for r in _runs(instance, tags={"dagster/partition": SHARD_MISSION})
            if r.status == dg.DagsterRunStatus.SUCCESS
        )
        assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.FAILURE
        assert retry.tags.get("dagster/parent_run_id") == first.run_id
        # the retry re-ran the killed shard and the merge; the plan and the other shard were kept
        assert shard_step(1) in _started_steps(instance, retry.run_id)
        assert not {f"{ASSET}.stage_a_plan", shard_step(0)} & _started_steps(instance, retry.run_id)
        event = instance.get_latest_materialization_event(dg.AssetKey(ASSET))
        assert (event.run_id, event.dagster_event.partition) == (retry.run_id, SHARD_MISSION)
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assigned = meta["stage_a/shard_1_photos"]
        assert killed_at < assigned, "shard 1 finished before the kill: give it more photos"
        assert meta["stage_a/shards"] == 2 and meta["stage_a/shard_0_photos"] + assigned == total
        # the retried shard generated only what the killed one had not logged
        assert meta["stage_a/shard_1_summarised_now"] == assigned - killed_at

    # no photo summarised twice: one log row per answer the model gave, folded into the one log
    rows = [json.loads(line) for line in (data / "summaries.jsonl").open(encoding="utf-8")]
    per_image = Counter((r["run_key"], r["image"], r["sha256"]) for r in rows)
    assert len(per_image) == total and max(per_image.values()) == 1, [k for k, n in per_image.items() if n > 1]
    assert Counter(r["shard"] for r in rows) == {0: total - assigned, 1: assigned}
    # the merged records equal those of a clean one-shard run of the same photos
    clean = Path(deployment.env["QC_DATA_ROOT"]) / "clean"
    run_stage_a(
        images,
        get_mission(SHARD_MISSION),
        tiny_vlm,
        StageAConfig(**{**settings, "shards": 1}),
        clean,
        log=lambda _: None,
    )
    assert (data / "records.jsonl").read_bytes() == (clean / "records.jsonl").read_bytes()
