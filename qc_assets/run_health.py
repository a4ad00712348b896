"""A run whose process died keeps nothing: it is marked failed and its pool slots are freed; and a
step that waits on a pool slot says which run and step hold it.

Why this exists: a run that crashes (a segfault, a SIGKILL, an OOM kill) never writes its end, so
it stays STARTED and keeps its `gpu` slot, and every later model step waits on that slot forever.
Dagster's run monitoring frees the slots of runs that *ended*; it cannot see that a run launched by
the default run launcher (or in-process, as `make demo` runs) lost its process. That process is
named in the run's own event log: the engine event that starts execution carries its `pid`.

A pid means something only on the host that started it, so this runs where the runs run: at the
start of `make demo`, and in `run_health_sensor` under the local daemon (`make ui`). Production
(Celery on several hosts) leaves dead-worker detection to the run launcher and run monitoring.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from resources.env import env

ACTIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
GPU_POOL_NAME = "gpu"


def process_start_time(pid: int) -> float | None:
    """When the process `pid` started (epoch seconds), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # no /proc (not Linux): existence only, start time unknown
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    # field 22 (after the parenthesised command name, which may hold spaces): clock ticks since boot
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    boot = next(
        int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was logged) of the process that executes the run: from the first engine event that
    names one ("Started process for run", "Executing steps in process", the multiprocess executor)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if pid is not None:
            return int(pid.value), entry.timestamp
    return None


def run_process_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    found = run_process(instance, run_id)
    return None if found is None else found[0]


def dead_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, int]]:
    """Active runs whose process is gone: no such pid, or the pid now belongs to a process that started
    after the run logged it (the pid was reused)."""
    dead = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        found = run_process(instance, record.dagster_run.run_id)
        if found is None:
            continue  # not executing yet: run monitoring's start timeout covers a run stuck before it
        pid, logged_at = found
        started = process_start_time(pid)
        if started is None or started > logged_at + 1.0:
            dead.append((record.dagster_run, pid))
    return dead


def fail_dead_runs(instance: dg.DagsterInstance, who: str, log: Callable[[str], None] = print) -> list[str]:
    """Mark every dead run failed, saying why, and free its pool slots; returns the run ids."""
    failed = []
    for run, pid in dead_runs(instance):
        slots = held_slots(instance).get(run.run_id, [])
        instance.report_run_failed(
            run,
            message=f"the process that ran this run (pid {pid}) is gone: it crashed or "
            f"was killed; marked failed by {who}, its pool slots freed",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log(
            f"run {run.run_id} ({run.job_name}, {run.tags.get('dagster/partition', 'no partition')}): process "
            f"{pid} is gone; marked failed, freed {len(slots)} pool slot(s): {', '.join(slots) or 'none'}"
        )
        failed.append(run.run_id)
    return failed


def free_slots_of_ended_runs(instance: dg.DagsterInstance, log: Callable[[str], None] = print) -> int:
    """Free slots still held by runs that have ended (what run monitoring does after
    `free_slots_after_run_end_seconds`, done now because the next run is about to need them)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return 0
    run_ids = storage.get_concurrency_run_ids()
    ended = (
        instance.get_run_records(dg.RunsFilter(run_ids=list(run_ids), statuses=list(dg.DagsterRunStatus)))
        if run_ids
        else []
    )
    freed = 0
    for record in ended:
        if record.dagster_run.is_finished:
            storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
            log(f"freed the pool slots of run {record.dagster_run.run_id} ({record.dagster_run.status.value})")
            freed += 1
    return freed


def held_slots(instance: dg.DagsterInstance, pool: str = GPU_POOL_NAME) -> dict[str, list[str]]:
    """run id -> the steps that hold a slot of `pool`."""
    held: dict[str, list[str]] = {}
    for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots:
        held.setdefault(slot.run_id, []).append(slot.step_key)
    return held


def pool_waits(
    instance: dg.DagsterInstance, pool: str = GPU_POOL_NAME, run_ids: set[str] | None = None
) -> list[tuple[str, str]]:
    """(run id, message) for each step waiting on a slot of `pool`: who holds the slots, for how long."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    holders = ", ".join(f"run {s.run_id} step {s.step_key}" for s in info.claimed_slots) or "nobody (being assigned)"
    waits = []
    for step in info.pending_steps:
        if step.assigned_timestamp is not None or (run_ids is not None and step.run_id not in run_ids):
            continue
        waited = time.time() - step.enqueued_timestamp.timestamp()
        waits.append(
            (
                step.run_id,
                f"step {step.step_key} has waited {waited:.0f}s for a `{pool}` pool slot "
                f"({len(info.claimed_slots)}/{info.limit} taken): held by {holders}",
            )
        )
    return waits


def _local_runs() -> bool:
    # with the Celery executor, steps run on other hosts: a pid seen here says nothing about them
    return env("QC_EXECUTOR", "") != "celery"


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING if _local_runs() else dg.DefaultSensorStatus.STOPPED,
    description="Local instance: fails runs whose process died (freeing their gpu slots) and writes into "
    "each waiting run's log which run and step hold the gpu slot it waits for.",
)
def run_health_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    instance = context.instance
    failed = fail_dead_runs(instance, who="run_health_sensor", log=context.log.info)
    waits = pool_waits(instance)
    for run_id, message in waits:
        run = instance.get_run_by_id(run_id)
        if run is not None:
            instance.report_engine_event(message, run)
    return dg.SkipReason(
        f"{len(failed)} dead run(s) marked failed; {len(waits)} step(s) waiting on the `{GPU_POOL_NAME}` pool"
    )
