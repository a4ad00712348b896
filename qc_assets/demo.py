"""`make demo`: materialize every per-mission asset for every mission folder of the sample images.

Runs on the instance in DAGSTER_HOME (SQLite), in one process so each model loads once. A second
run reuses finished work: Stage-A finds every summary in its log, Stage-B its rollouts.
"""

import sys
import time

import dagster as dg

from definitions import defs
from qc_assets.missions import all_missions
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.watch import mission_signatures


def main() -> int:
    instance = dg.DagsterInstance.get()
    storage = defs.resources["storage"]
    registered = all_missions()
    found = sorted(mission_signatures(storage.images()))
    missions = [m for m in found if m in registered]
    for name in sorted(set(found) - set(registered)):
        print(f"skipping folder {name!r}: not in the mission registry")
    if not missions:
        print(f"no mission folders under {storage.images()}; run `make sample-data` first")
        return 1
    known = set(instance.get_dynamic_partitions(mission_partitions.name))
    instance.add_dynamic_partitions(mission_partitions.name, [m for m in missions if m not in known])

    job = defs.resolve_job_def("qc_pipeline")
    failed = []
    for mission in missions:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=mission, instance=instance, raise_on_error=False)
        status = "ok" if result.success else "FAILED"
        print(f"[{status}] {mission}: run {result.run_id} in {time.perf_counter() - started:.1f}s")
        if not result.success:
            failed.append(mission)
    failed += _run_extra_jobs(instance)

    print(f"\nOutputs: {storage.root()}/<asset>/<mission>/  (records.jsonl, skipped.jsonl, ...)")
    print(f"Dagster instance: {instance.root_directory}")
    print("Open the UI with `make ui`, then http://127.0.0.1:3000 (Assets -> qc).")
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


def _run_extra_jobs(instance: dg.DagsterInstance) -> list[str]:
    """Jobs outside the mission graph (FastDistill) that the demo also runs, if they are defined."""
    failed = []
    for name, runner in _EXTRA_JOBS.items():
        ok = runner(instance)
        print(f"[{'ok' if ok else 'FAILED'}] {name}")
        if not ok:
            failed.append(name)
    return failed


_EXTRA_JOBS: dict = {}

if __name__ == "__main__":
    sys.exit(main())
