"""Plain entry point: materialize the FastDistill group for one run_id on a Dagster instance.

`make demo` (or `python -m qc_assets.fastdistill.runner [run_id]`) runs a small run on the embedded
SmolLM2 with DEMO_RUN_CONFIG; results show up in the Dagster UI of the same DAGSTER_HOME.
"""

from __future__ import annotations

import sys

import dagster as dg

from qc_assets.fastdistill.assets import assets as fastdistill_assets
from qc_assets.fastdistill.partitions import fastdistill_runs
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import data_root

# Small enough for a shared 2-core CPU: 12 train questions to the teacher, 4 held out for the student.
# SmolLM2-135M almost never reproduces the gold result, so the demo keeps SQL that executes
# (require_gold_match=False) to have something to train on; the reports show the gold-match rate as
# it is. A real run with a capable teacher keeps the default require_gold_match=True.
DEMO_RUN_CONFIG = {
    "source": "synthetic", "seed": 0, "per_template": 1, "max_train": 12, "max_dev": 4,
    "recipe": "sql", "temperature": 0.0, "n": 1, "max_new_tokens": 40, "max_in_flight": 1, "chunk_size": 8,
    "require_gold_match": False,
}
DEMO_STUDENT_CONFIG = {"steps": 6, "batch_size": 2, "eval_max_new_tokens": 48, "cpu_threads": 1}
# One intra-op thread: a 135M model decodes faster on one thread than with OpenMP workers spinning
# on a small shared CPU.
DEMO_TEACHER = {"batch_size": 8, "cpu_threads": 1}


def run_fastdistill(
    run_id: str = "demo",
    run_config: dict | None = None,
    student_config: dict | None = None,
    instance: dg.DagsterInstance | None = None,
    storage: StorageResource | None = None,
    teacher_llm: LLMResource | None = None,
    include_student: bool = True,
    raise_on_error: bool = True,
) -> dg.ExecuteInJobResult:
    """Materialize the group for `run_id` (added as a dynamic partition if new). Re-running a run_id
    reuses its teacher cache: finished samples are not sent to the teacher again."""
    instance = instance or dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(fastdistill_runs.name, run_id):
        instance.add_dynamic_partitions(fastdistill_runs.name, [run_id])
    selected = [a for a in fastdistill_assets if include_student or a.key.path[-1] != "fastdistill_student"]
    ops = {"fastdistill_inputs": {"config": {**DEMO_RUN_CONFIG, **(run_config or {})}}}
    if include_student:
        ops["fastdistill_student"] = {"config": {**DEMO_STUDENT_CONFIG, **(student_config or {})}}
    return dg.materialize(
        selected,
        partition_key=run_id,
        instance=instance,
        resources={
            "storage": storage or StorageResource(data_root=str(data_root())),
            "teacher_llm": teacher_llm or LLMResource(**DEMO_TEACHER),
        },
        run_config={"ops": ops},
        raise_on_error=raise_on_error,
    )


if __name__ == "__main__":
    result = run_fastdistill(sys.argv[1] if len(sys.argv) > 1 else "demo", raise_on_error=False)
    print(f"fastdistill run {'succeeded' if result.success else 'FAILED'}")
    sys.exit(0 if result.success else 1)
