"""`make demo`: materialize every per-mission asset for every mission folder of the sample images,
then train one student for all missions (`student_job`, saying whether it was promoted or refused),
then a small FastDistill run.

Runs on the instance in DAGSTER_HOME (SQLite), in one process so each model loads once. A second
run reuses finished work: Stage-A finds every summary in its log (the inbox summaries too), Stage-B
its rollouts, qc_verdicts its verdict samples, distillation and FastDistill their teacher caches, and
both students their finished run when nothing they depend on changed.

Before the first asset it fails the runs that an earlier, crashed demo left STARTED and frees their
pool slots, and decodes a few tokens with each local model in a child process (resources/self_check.py),
so a crashing native build stops here with a clear message. Ctrl-C or SIGTERM ends it within
seconds, its runs canceled and their slots freed; a step waiting on a pool slot says who holds it.

    python -m qc_assets.cli.demo [--mission NAME ...] [--job qc_pipeline] [--per-mission-only]
"""

import argparse
import os
import signal
import sys
import threading
import time
import uuid

import dagster as dg

# The demo trains the random-weight smoke student on purpose; production sets QC_STUDENT_MODEL instead.
os.environ.setdefault("QC_STUDENT_SMOKE_MODEL", "1")

from definitions import defs
from qc_assets.asset_names import (
    DISTILL_CHATML,
    FUSED_SFT_CHECKPOINT,
    INBOX_SUMMARIES,
    MISSION_HEALTH,
    QC_VERDICTS,
    STAGE_A_SUMMARIES,
    STAGE_B_GUIDANCE,
)
from qc_assets.cli.fastdistill import run_fastdistill
from qc_assets.cli.sample_data import review_sample_inbox
from qc_assets.fastdistill import assets as fastdistill_assets
from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.run_health import ACTIVE_STATUSES, fail_dead_runs, free_slots_of_ended_runs, pool_waits, run_process_pid
from qc_assets.stage_a.watch import mission_folders
from resources.env import env_number
from resources.self_check import SelfCheckError

# How often a step waiting on a pool slot says who holds it (seconds).
POOL_WAIT_LOG_S = env_number("QC_POOL_WAIT_LOG_S", "30", float)

# Sized for a 2-core CPU and the embedded 135M model. The teacher decodes under the verdict contract
# because SmolLM2-135M almost never writes the two-line verdict unaided (docs/benchmarks.md); a
# production teacher runs with the defaults. One Stage-B epoch of the 135M model does not converge,
# so the demo distils anyway, which distill_chatml refuses unless asked and records in its metadata.
DEMO_STAGE_A = {"max_new_tokens": 48, "max_truncated_share_blocking": 1.0}
DEMO_RUN_CONFIG = {
    # INFO, not Dagster's DEBUG event stream: the console then shows each stage's own progress lines
    # (batches, epochs, teacher calls), every line tagged with its step.
    "loggers": {"console": {"config": {"log_level": "INFO"}}},
    "ops": {
        # The random-weight smoke VLM never stops on its own: every answer runs to the cap. The demo caps
        # summaries at 48 tokens (production: 1024) and lets stage_a_truncation_share warn without
        # blocking Stage-B; both settings appear in the assets' metadata (max_new_tokens_note).
        STAGE_A_SUMMARIES: {"config": DEMO_STAGE_A},
        INBOX_SUMMARIES: {"config": DEMO_STAGE_A},
        STAGE_B_GUIDANCE: {"config": {"epochs": 1, "rounds_per_epoch": 1}},
        DISTILL_CHATML: {"config": {"constrained": True, "n_samples": 2, "allow_unconverged": True}},
        # the sample set has four reviewed groups per mission (R6xx): a drift window of four shows a number
        QC_VERDICTS: {"config": {"window_reviews": 4, "min_reviews": 4}},
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Materialize the pipeline on the sample images.")
    parser.add_argument("--mission", action="append", help="only this mission (repeatable); default: every one")
    parser.add_argument("--job", default="qc_pipeline", help="the per-mission job (default qc_pipeline)")
    parser.add_argument("--per-mission-only", action="store_true", help="skip the student and FastDistill runs")
    args = parser.parse_args(argv)

    instance = dg.DagsterInstance.get()
    _stop_on_signals(instance)
    storage = defs.resources["storage"]
    registered = all_missions()
    found = mission_folders(storage.images())
    missions = [m for m in found if m in registered and (not args.mission or m in args.mission)]
    for name in sorted(set(found) - set(registered)):
        print(f"skipping folder {name!r}: not in the mission registry")
    if not missions:
        print(f"no mission folders under {storage.images()}; run `make sample-data` first")
        return 1
    _clean_up_after_crashed_runs(instance)
    try:
        _self_check_models()
    except SelfCheckError as e:
        print(f"\nself-check FAILED, nothing was run: {e}", file=sys.stderr)
        return 3
    known = set(instance.get_dynamic_partitions(mission_partitions.name))
    instance.add_dynamic_partitions(mission_partitions.name, [m for m in missions if m not in known])

    job = defs.resolve_job_def(args.job)
    expected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    run_config = _run_config_for(expected)
    problems = []
    for n, mission in enumerate(missions, start=1):
        print(f"\n[{n}/{len(missions)}] {mission}: {', '.join(sorted(expected))}", flush=True)
        started = time.perf_counter()
        result = _guarded(
            instance,
            lambda mission=mission: job.execute_in_process(
                run_config=run_config,
                partition_key=mission,
                instance=instance,
                raise_on_error=False,
                run_id=str(uuid.uuid4()),
            ),
        )
        _print_stage_times(result, expected)
        problems += _report(f"{mission} (run {result.run_id}, {time.perf_counter() - started:.0f}s)", result, expected)
    if args.per_mission_only:
        return _finish(problems, storage, instance)
    problems += _review_and_rejudge(instance, missions, storage)

    print("\n[student] one student for every mission: fused_sft_checkpoint", flush=True)
    started = time.perf_counter()
    result = _guarded(
        instance,
        lambda: defs.resolve_job_def("student_job").execute_in_process(instance=instance, raise_on_error=False),
    )
    problems += _report(
        f"student (run {result.run_id}, {time.perf_counter() - started:.0f}s)", result, {FUSED_SFT_CHECKPOINT}
    )
    problems += _student_verdict(result)

    print("\n[fastdistill] run 'demo'", flush=True)
    started = time.perf_counter()
    result = _guarded(
        instance,
        lambda: run_fastdistill(
            "demo",
            instance=instance,
            storage=storage,
            teacher_llm=defs.resources["teacher_llm"],
            text_student=defs.resources["text_student"],
            raise_on_error=False,
        ),
    )
    problems += _report(
        f"FastDistill run 'demo' ({time.perf_counter() - started:.0f}s)",
        result,
        {a.key.to_user_string() for a in fastdistill_assets.assets},
    )
    return _finish(problems, storage, instance)


def _run_config_for(assets: set[str]) -> dict:
    """DEMO_RUN_CONFIG with only the ops a job has (Dagster refuses config for ops it does not run)."""
    return {**DEMO_RUN_CONFIG, "ops": {k: v for k, v in DEMO_RUN_CONFIG["ops"].items() if k in assets}}


def _review_and_rejudge(instance: dg.DagsterInstance, missions: list[str], storage) -> list[str]:
    """Play the reviewer on the sample inbox (review_sample_inbox), then let qc_verdicts log the reviews."""
    reviewed = review_sample_inbox(storage.images())
    if not reviewed:
        return []
    print(
        f"\n[review] a reviewer filed {len(reviewed)} judged inbox groups; inbox_verdicts_job logs the reviews",
        flush=True,
    )
    job = defs.resolve_job_def("inbox_verdicts_job")
    expected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    run_config = _run_config_for(expected)
    problems = []
    for mission in sorted({r.split("/")[0] for r in reviewed} & set(missions)):
        result = _guarded(
            instance,
            lambda m=mission: job.execute_in_process(
                run_config=run_config, partition_key=m, instance=instance, raise_on_error=False
            ),
        )
        problems += _report(f"{mission} reviews (run {result.run_id})", result, expected)
    return problems


def _finish(problems: list[str], storage, instance) -> int:
    print("\n[health] mission_health: every mission at a glance", flush=True)
    result = _guarded(
        instance,
        lambda: defs.resolve_job_def("mission_health_job").execute_in_process(
            run_config=_run_config_for(set()), instance=instance, raise_on_error=False
        ),
    )
    problems += _report(f"mission_health (run {result.run_id})", result, {MISSION_HEALTH})
    for mat in result.get_asset_materialization_events():
        print(mat.step_materialization_data.materialization.metadata["health"].value)
    print(f"\nOutputs: {storage.root()}/<asset>/<partition>/")
    print(f"Dagster instance: {instance.root_directory}")
    print("Open the UI with `make ui`, then http://127.0.0.1:3000 (Catalog -> qc, fastdistill).")
    if problems:
        print("\n" + "\n".join(problems))
    return 1 if any(p.startswith("FAILED") for p in problems) else 0


def _clean_up_after_crashed_runs(instance: dg.DagsterInstance) -> None:
    """A demo that crashed or was SIGKILLed left its run STARTED and its `gpu` slot taken; without this
    the next demo would wait on that slot forever."""
    failed = fail_dead_runs(instance, who="make demo at start-up")
    freed = free_slots_of_ended_runs(instance)
    if failed or freed:
        print(f"cleaned up after crashed runs: {len(failed)} marked failed, slots of {freed} ended run(s) freed")


def _self_check_models() -> None:
    """One tiny decode per local model in a child process, before any asset step (seconds each)."""
    for name in ("vlm", "llm", "teacher_llm"):
        seconds = defs.resources[name].check_backend()
        if seconds:
            print(f"self-check {name}: ok ({seconds:.1f}s, a few tokens decoded in a child process)", flush=True)


def _runs_of_this_process(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    records = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES))
    return [r.dagster_run for r in records if run_process_pid(instance, r.dagster_run.run_id) == os.getpid()]


def _stop_on_signals(instance: dg.DagsterInstance) -> None:
    """Ctrl-C / SIGTERM: cancel this process's runs, free their slots, exit at once.

    The runs execute on a worker thread (`_guarded`), so Dagster's in-process executor, which defers
    SIGINT in the main thread and never looks while it waits on a pool slot, does not swallow it.
    """

    def stop(signum, _frame):
        name = signal.Signals(signum).name
        runs = _runs_of_this_process(instance)
        for run in runs:
            instance.report_run_canceled(run, message=f"make demo stopped by {name}")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        print(
            f"\nstopped by {name}: {len(runs)} run(s) canceled "
            f"({', '.join(r.run_id for r in runs) or 'none in flight'}), their pool slots freed",
            flush=True,
        )
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _guarded(instance: dg.DagsterInstance, execute):
    """Run `execute()` on a worker thread; the main thread stays free for signals and, every
    POOL_WAIT_LOG_S, says which run and step hold the slot a step of ours waits for (console and run log)."""
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = execute()
        except BaseException as e:  # handed to the main thread below, which re-raises it
            outcome["error"] = e

    worker = threading.Thread(target=work, name="demo-run", daemon=True)
    worker.start()
    next_look = time.monotonic() + POOL_WAIT_LOG_S
    while worker.is_alive():
        worker.join(timeout=0.5)
        if worker.is_alive() and time.monotonic() >= next_look:
            ours = {r.run_id: r for r in _runs_of_this_process(instance)}
            for run_id, message in pool_waits(instance, run_ids=set(ours)):
                # the run log first: whoever reads the console line can then find it in the run's log
                instance.report_engine_event(message, ours[run_id])
                print(f"  waiting: {message}", flush=True)
            next_look = time.monotonic() + POOL_WAIT_LOG_S
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _print_stage_times(result, stages: set[str]) -> None:
    """One line per stage (asset step; checks are in the run's summary line): how it ended, how long it took."""
    for event in result.all_events:
        if event.step_key not in stages:
            continue
        if event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ok = event.event_type == dg.DagsterEventType.STEP_SUCCESS
            seconds = event.event_specific_data.duration_ms / 1000 if ok else None
            print(f"  {event.step_key:<28} {'ok' if ok else 'FAILED'}" + (f" {seconds:.0f}s" if ok else ""))
        elif event.event_type == dg.DagsterEventType.STEP_SKIPPED:
            print(f"  {event.step_key:<28} skipped (an upstream step failed or a blocking check did not pass)")


def _student_verdict(result) -> list[str]:
    """Say whether the one student was promoted to `current` or refused, and why."""
    for mat in result.get_asset_materialization_events():
        meta = mat.step_materialization_data.materialization.metadata
        if "promoted" in meta:
            run_id, current = meta["run_id"].value, meta["current_run"].value or "none"
            if meta["promoted"].value:
                print(f"student run {run_id}: PROMOTED; fused_sft_checkpoint/current -> runs/{run_id}")
                return []
            print(f"student run {run_id}: REFUSED by the eval gate; current stays {current}")
            return [f"student run {run_id} refused: {meta['preview'].value}"]
    return []


def _report(title: str, result, expected: set[str]) -> list[str]:
    """A run counts as failed when an asset did not materialize; a failed check is reported, not hidden.

    A blocking check that fails (e.g. the fused checkpoint's eval gate on the random smoke model) marks
    the Dagster run failed on purpose: the asset exists but is not marked good.
    """
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    missing = sorted(expected - materialized)
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    status = "ok" if not missing else "FAILED"
    print(
        f"[{status}] {title}: {len(materialized)} assets materialized"
        + (f", failed checks: {', '.join(failed_checks)}" if failed_checks else "")
    )
    out = [f"FAILED {title}: not materialized: {', '.join(missing)}"] if missing else []
    out += [f"check did not pass in {title}: {check}" for check in failed_checks]
    return out


if __name__ == "__main__":
    sys.exit(main())
