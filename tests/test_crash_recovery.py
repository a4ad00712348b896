"""A crash never blocks the next run: real `make demo` processes on a real local (SQLite) instance.

- A demo SIGKILLed while its Stage-A step holds the `gpu` slot leaves its run STARTED and the slot
  taken; the next demo marks that run failed, frees the slot and finishes.
- SIGTERM to a demo whose step waits on a slot held by another run ends it in seconds, its run
  canceled, and before that it says which run and step hold the slot.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from qc_assets.cli.sample_data import write_sample_images
from qc_assets.run_health import GPU_POOL_NAME, held_slots, process_start_time

ROOT = Path(__file__).resolve().parents[1]
MISSION = "BBU接地线检查"
SHARD_STEP = "stage_a_summaries.stage_a_shard[shard_0]"


@pytest.fixture
def demo_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    write_sample_images(tmp_path / "data" / "images", groups_per_label=4)
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "QC_DATA_ROOT": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


class Demo:
    """`python -m qc_assets.cli.demo` for one mission's Stage-A job, its output collected line by line."""

    def __init__(self, env: dict):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qc_assets.cli.demo",
                "--mission",
                MISSION,
                "--job",
                "stage_a_job",
                "--per-mission-only",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited ({self.proc.returncode}) before {what}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{self.output()[-3000:]}")
            time.sleep(0.1)


def _instance(env) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def test_a_sigkilled_demo_holding_the_gpu_slot_does_not_block_the_next_one(demo_env):
    instance = _instance(demo_env)
    first = Demo(demo_env)
    first.wait_for(lambda: held_slots(instance), 300, "the Stage-A step to hold the gpu slot")
    (dead_run,) = held_slots(instance)
    first.proc.kill()
    first.proc.wait(10)
    assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED, "the crash left it STARTED"
    # the one shard step of the sharded Stage-A asset (shards: 1) holds the slot
    assert held_slots(instance) == {dead_run: [SHARD_STEP]}

    second = Demo(demo_env)
    second.wait_for(lambda: second.proc.poll() is not None, 300, "the second demo to finish")
    out = second.output()
    assert second.proc.returncode == 0, out[-3000:]
    assert f"run {dead_run}" in out and f"is gone; marked failed, freed 1 pool slot(s): {SHARD_STEP}" in out
    assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE
    info = instance.event_log_storage.get_concurrency_info(GPU_POOL_NAME)
    assert not info.claimed_slots and not info.pending_steps, "gpu shows 0 slots occupied"


def test_sigterm_ends_a_demo_that_waits_on_a_pool_slot_within_seconds(demo_env):
    instance = _instance(demo_env)
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(GPU_POOL_NAME)
    storage.claim_concurrency_slot(GPU_POOL_NAME, "holder-run", "stage_b_guidance")  # another, live holder
    demo = Demo({**demo_env, "QC_POOL_WAIT_LOG_S": "1"})
    demo.wait_for(
        lambda: "held by run holder-run step stage_b_guidance" in demo.output(),
        300,
        "the waiting step to say who holds the slot",
    )
    (waiting_run,) = [
        s.run_id for s in storage.get_concurrency_info(GPU_POOL_NAME).pending_steps if s.assigned_timestamp is None
    ]
    logged = [e.message for e in instance.all_logs(waiting_run, of_type=dg.DagsterEventType.ENGINE_EVENT)]
    assert any("held by run holder-run" in m for m in logged), "the wait is in the run's own log too"

    sent = time.monotonic()
    demo.proc.send_signal(signal.SIGTERM)
    demo.proc.wait(15)
    assert time.monotonic() - sent < 10
    assert demo.proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM: 1 run(s) canceled" in demo.output()
    assert instance.get_run_by_id(waiting_run).status == dg.DagsterRunStatus.CANCELED
    info = storage.get_concurrency_info(GPU_POOL_NAME)
    assert [s.run_id for s in info.claimed_slots] == ["holder-run"]
    assert {s.run_id for s in info.pending_steps} == {"holder-run"}, "the canceled run waits on nothing"


def test_ctrl_c_ends_a_demo_while_it_computes_with_its_run_canceled_and_its_slot_free(demo_env):
    instance = _instance(demo_env)
    demo = Demo(demo_env)
    demo.wait_for(lambda: held_slots(instance), 300, "the Stage-A step to hold the gpu slot")
    (run_id,) = held_slots(instance)
    sent = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    demo.proc.wait(15)
    assert time.monotonic() - sent < 10 and demo.proc.returncode == 128 + signal.SIGINT
    assert "stopped by SIGINT: 1 run(s) canceled" in demo.output()
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
    assert held_slots(instance) == {}


def test_a_pid_reused_by_a_later_process_is_not_the_run_process():
    assert process_start_time(os.getpid()) <= time.time()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_start_time(child.pid) is None


_CRASHING_RUN = """
import os, signal, dagster as dg

@dg.op(pool="gpu")
def crash():
    os.kill(os.getpid(), signal.SIGKILL)  # a segfault or an OOM kill, as the run sees it

@dg.job
def crash_job():
    crash()

crash_job.execute_in_process(instance=dg.DagsterInstance.get())
"""


def test_run_health_sensor_fails_a_run_whose_process_died_and_frees_its_slot(demo_env):
    from qc_assets.run_health import run_health_sensor

    child = subprocess.run([sys.executable, "-c", _CRASHING_RUN], env=demo_env, cwd=ROOT, timeout=120)
    assert child.returncode == -signal.SIGKILL
    instance = _instance(demo_env)
    (run_id,) = held_slots(instance)
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

    result = run_health_sensor(dg.build_sensor_context(instance=instance))
    assert "1 dead run(s) marked failed" in result.skip_message
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert held_slots(instance) == {}
    again = run_health_sensor(dg.build_sensor_context(instance=instance))
    assert "0 dead run(s) marked failed" in again.skip_message
