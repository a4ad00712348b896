"""Plain entry point: materialize the FastDistill group for one run_id on a Dagster instance.

`python -m qc_assets.cli.fastdistill RUN_ID --config run.yaml` runs the settings of one run file
(configs/fastdistill/ holds the seed's four recipes) and nothing else: no demo default is merged in.
`--demo` (what `make demo` runs) starts from the small embedded-SmolLM2 settings below, under the
file's if one is given. The teacher is the file's `teacher:` block (LLMResource fields), else the
QC_TEACHER_* environment; the student's base model, device and dtype are QC_TEXT_STUDENT_* (the same
`text_student_from_env` as definitions.py). Results show up in the Dagster UI of the same DAGSTER_HOME.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import dagster as dg
import yaml

from qc_assets.fastdistill.assets import assets as fastdistill_assets
from qc_assets.fastdistill.config import FastDistillSettings, TextStudentConfig
from qc_assets.fastdistill.partitions import fastdistill_runs
from qc_assets.run_config import from_mapping
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import data_root
from resources.training.text_student import TextStudentResource, text_student_from_env

# Small enough for a shared 2-core CPU: 12 train questions to the teacher, 4 held out for the student.
# SmolLM2-135M almost never reproduces the gold result, so the demo keeps SQL that executes
# (require_gold_match=False) to have something to train on; the reports show the gold-match rate as
# it is. A real run with a capable teacher keeps the default require_gold_match=True.
DEMO_RUN_CONFIG = {
    "source": "synthetic",
    "seed": 0,
    "per_template": 1,
    "max_train": 12,
    "max_dev": 4,
    "recipe": "sql",
    "temperature": 0.0,
    "n": 1,
    "max_new_tokens": 40,
    "max_in_flight": 1,
    "chunk_size": 8,
    "require_gold_match": False,
}
DEMO_STUDENT_CONFIG = {"lora": {"max_steps": 6, "batch_size": 2}, "eval_max_new_tokens": 48}
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
    text_student: TextStudentResource | None = None,
    include_student: bool = True,
    raise_on_error: bool = True,
    demo: bool = True,
) -> dg.ExecuteInJobResult:
    """Materialize the group for `run_id` (added as a dynamic partition if new). Re-running a run_id
    reuses its teacher cache: finished samples are not sent to the teacher again. `demo` puts the
    demo settings under `run_config` / `student_config`; without it they are used as given. The student's
    base model, device and dtype are the `text_student` resource, from QC_TEXT_STUDENT_* unless given."""
    instance = instance or dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(fastdistill_runs.name, run_id):
        instance.add_dynamic_partitions(fastdistill_runs.name, [run_id])
    selected = [a for a in fastdistill_assets if include_student or a.key.path[-1] != "fastdistill_student"]
    base_run, base_student = (DEMO_RUN_CONFIG, DEMO_STUDENT_CONFIG) if demo else ({}, {})
    ops = {"fastdistill_inputs": {"config": {**base_run, **(run_config or {})}}}
    if include_student:
        student = student_config or {}
        lora = {**base_student.get("lora", {}), **student.get("lora", {})}
        ops["fastdistill_student"] = {"config": {**base_student, **student, **({"lora": lora} if lora else {})}}
    return dg.materialize(
        selected,
        partition_key=run_id,
        instance=instance,
        resources={
            "storage": storage or StorageResource(data_root=str(data_root())),
            "teacher_llm": teacher_llm or (LLMResource(**DEMO_TEACHER) if demo else _teacher_from_env()),
            "text_student": text_student or text_student_from_env(),
        },
        run_config={"ops": ops},
        raise_on_error=raise_on_error,
    )


RUN_FILE_KEYS = ("run", "student", "teacher")


def load_run_file(path: str | Path) -> dict[str, dict]:
    """A run file's `run:` (FastDistillSettings fields), `student:` (TextStudentConfig fields: a `lora:` block
    and `eval_max_new_tokens`) and `teacher:` (LLMResource fields) blocks, each validated; relative data
    paths resolve against the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"run file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("run"), dict):
        raise ValueError(f"{path}: expected a mapping with a `run:` block (and optional `student:`, `teacher:`)")
    unknown = sorted(set(data) - set(RUN_FILE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}, expected some of {list(RUN_FILE_KEYS)}")
    run = dict(data["run"])
    for key in ("data_path", "tables_path", "db_path"):
        if run.get(key) and not Path(run[key]).expanduser().is_absolute():
            run[key] = str((path.parent / run[key]).resolve())
        elif run.get(key):
            run[key] = str(Path(run[key]).expanduser())
    FastDistillSettings.from_dict(run)  # names an unknown key or a bad value before anything runs
    student = dict(data.get("student") or {})
    from_mapping(TextStudentConfig, student, f"{path}: student")
    teacher = dict(data.get("teacher") or {})
    if "api_key" in teacher:
        raise ValueError(f"{path}: teacher.api_key must not be written in a file; set QC_TEACHER_API_KEY")
    return {"run": run, "student": student, "teacher": teacher}


def _teacher_from_env() -> LLMResource:
    from definitions import llm_from_env

    return llm_from_env("QC_TEACHER")


def _teacher(settings: dict) -> LLMResource:
    if not settings:
        return _teacher_from_env()
    if "QC_TEACHER_API_KEY" in os.environ:  # a secret: only ever through EnvVar
        settings = {**settings, "api_key": dg.EnvVar("QC_TEACHER_API_KEY")}
    return LLMResource(**settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qc_assets.cli.fastdistill", description="Materialize the FastDistill group for one run id."
    )
    p.add_argument("run_id")
    p.add_argument("--config", help="run file: run / student / teacher blocks (configs/fastdistill/*.yaml)")
    p.add_argument("--demo", action="store_true", help="start from the small embedded-SmolLM2 demo settings")
    p.add_argument("--no-student", action="store_true", help="stop after the dataset export")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.config and not args.demo:
        raise SystemExit("give --config run.yaml (see configs/fastdistill/), or --demo for the demo settings")
    blocks = load_run_file(args.config) if args.config else {"run": {}, "student": {}, "teacher": {}}
    teacher = _teacher(blocks["teacher"]) if (blocks["teacher"] or not args.demo) else None
    result = run_fastdistill(
        args.run_id,
        blocks["run"],
        blocks["student"],
        teacher_llm=teacher,
        include_student=not args.no_student,
        raise_on_error=False,
        demo=args.demo,
    )
    print(f"fastdistill run {args.run_id} {'succeeded' if result.success else 'FAILED'}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
