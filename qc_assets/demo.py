"""`make demo`: materialize every per-mission asset for every mission folder of the sample images,
then train one student for all missions (`student_job`, saying whether it was promoted or refused),
then a small FastDistill run.

Runs on the instance in DAGSTER_HOME (SQLite), in one process so each model loads once. A second
run reuses finished work: Stage-A finds every summary in its log (the inbox summaries too), Stage-B
its rollouts, qc_verdicts its verdict samples, distillation and FastDistill their teacher caches, and
both students their finished run when nothing they depend on changed.
"""

import os
import sys
import time

import dagster as dg

# The demo trains the random-weight smoke student on purpose; production sets QC_STUDENT_MODEL instead.
os.environ.setdefault("QC_STUDENT_SMOKE_MODEL", "1")

from definitions import defs
from qc_assets.fastdistill import assets as fastdistill_assets
from qc_assets.fastdistill.runner import run_fastdistill
from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.watch import mission_folders

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
        "stage_a_summaries": {"config": DEMO_STAGE_A},
        "inbox_summaries": {"config": DEMO_STAGE_A},
        "stage_b_guidance": {"config": {"epochs": 1, "rounds_per_epoch": 1}},
        "distill_chatml": {"config": {"constrained": True, "n_samples": 2, "allow_unconverged": True}},
    }
}


def main() -> int:
    instance = dg.DagsterInstance.get()
    storage = defs.resources["storage"]
    registered = all_missions()
    found = mission_folders(storage.images())
    missions = [m for m in found if m in registered]
    for name in sorted(set(found) - set(registered)):
        print(f"skipping folder {name!r}: not in the mission registry")
    if not missions:
        print(f"no mission folders under {storage.images()}; run `make sample-data` first")
        return 1
    known = set(instance.get_dynamic_partitions(mission_partitions.name))
    instance.add_dynamic_partitions(mission_partitions.name, [m for m in missions if m not in known])

    job = defs.resolve_job_def("qc_pipeline")
    expected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    problems = []
    for n, mission in enumerate(missions, start=1):
        print(f"\n[{n}/{len(missions)}] {mission}: {', '.join(sorted(expected))}", flush=True)
        started = time.perf_counter()
        result = job.execute_in_process(run_config=DEMO_RUN_CONFIG, partition_key=mission, instance=instance,
                                        raise_on_error=False)
        _print_stage_times(result, expected)
        problems += _report(f"{mission} (run {result.run_id}, {time.perf_counter() - started:.0f}s)",
                            result, expected)

    print("\n[student] one student for every mission: fused_sft_checkpoint", flush=True)
    started = time.perf_counter()
    result = defs.resolve_job_def("student_job").execute_in_process(instance=instance, raise_on_error=False)
    problems += _report(f"student (run {result.run_id}, {time.perf_counter() - started:.0f}s)", result,
                        {"fused_sft_checkpoint"})
    problems += _student_verdict(result)

    print("\n[fastdistill] run 'demo'", flush=True)
    started = time.perf_counter()
    result = run_fastdistill("demo", instance=instance, storage=storage, teacher_llm=defs.resources["teacher_llm"],
                             raise_on_error=False)
    problems += _report(f"FastDistill run 'demo' ({time.perf_counter() - started:.0f}s)", result,
                        {a.key.to_user_string() for a in fastdistill_assets.assets})

    print(f"\nOutputs: {storage.root()}/<asset>/<partition>/")
    print(f"Dagster instance: {instance.root_directory}")
    print("Open the UI with `make ui`, then http://127.0.0.1:3000 (Catalog -> qc, fastdistill).")
    if problems:
        print("\n" + "\n".join(problems))
    return 1 if any(p.startswith("FAILED") for p in problems) else 0


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
    failed_checks = [f"{e.asset_key.to_user_string()}:{e.check_name}"
                     for e in result.get_asset_check_evaluations() if not e.passed]
    status = "ok" if not missing else "FAILED"
    print(f"[{status}] {title}: {len(materialized)} assets materialized"
          + (f", failed checks: {', '.join(failed_checks)}" if failed_checks else ""))
    out = [f"FAILED {title}: not materialized: {', '.join(missing)}"] if missing else []
    out += [f"check did not pass in {title}: {check}" for check in failed_checks]
    return out


if __name__ == "__main__":
    sys.exit(main())
