"""Student stage: LoRA SFT on this run's export, then base vs student on the dev split.

The `text_student` resource (`resources/training/text_student.py`) owns the base model, device and
dtype: it trains (TRL SFTTrainer) and hands back the base and the trained model as `ChatLLM`s, so
this module builds no backend and no trainer itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from qc_assets.fastdistill import pipeline
from qc_assets.fastdistill.config import TextStudentConfig
from qc_assets.fastdistill.reports import stage_timing, write_stage_reports
from qc_assets.fastdistill.student import evaluate_llm
from resources.llm import DecodeParams
from resources.store import atomic_write_json, inputs_hash, iter_jsonl
from resources.training.text_student import TextStudentResource

STUDENT_DONE = "student_done.json"  # written last: its inputs key marks a finished train + eval


def inputs_key(student_cfg: TextStudentConfig, student_identity: dict, sft: list, dev: list) -> str:
    """What the student and its eval depend on: the config, the base model (the resource's `identity()`:
    its files' names and sizes, and the dtype), the training rows and the dev split."""
    return inputs_hash({"config": asdict(student_cfg), "student": student_identity, "sft": sft, "dev": dev})


def _finished(run_dir: Path, key: str) -> dict | None:
    """The earlier result when train + eval finished with these inputs: a re-run redoes nothing."""
    done = run_dir / "train" / STUDENT_DONE
    reports = [
        run_dir / "train" / "train_report.json",
        run_dir / "eval" / "eval_report.json",
        run_dir / "reports" / "lineage.json",
    ]
    if not done.is_file() or json.loads(done.read_text(encoding="utf-8")).get("inputs_key") != key:
        return None
    if not all(p.is_file() for p in reports):  # a report removed since: train + eval again
        return None
    evaluation = json.loads((run_dir / "eval" / "eval_report.json").read_text(encoding="utf-8"))
    return {
        "train": json.loads((run_dir / "train" / "train_report.json").read_text(encoding="utf-8")),
        "before": evaluation["before"],
        "after": evaluation["after"],
        "lineage": json.loads((run_dir / "reports" / "lineage.json").read_text(encoding="utf-8")),
        "reused": True,
    }


def run_student(run_dir: Path, student_cfg: TextStudentConfig, text_student: TextStudentResource) -> dict:
    """Train through the `text_student` resource, then score its base and the trained student on the dev split."""
    run_dir = Path(run_dir)
    cfg = pipeline.load_config(run_dir)
    sft = list(iter_jsonl(run_dir / "export" / "sft_chatml.jsonl"))
    dev = [r for r in pipeline.read_rows(run_dir / "dedup" / "records.parquet") if r["split"] == "dev"]
    key = inputs_key(student_cfg, text_student.identity(), sft, dev)
    previous = _finished(run_dir, key)
    if previous is not None:
        return previous
    params = DecodeParams(temperature=0.0, max_new_tokens=student_cfg.eval_max_new_tokens, seed=student_cfg.lora.seed)

    t0 = time.perf_counter()
    report = text_student.train([r["messages"] for r in sft], student_cfg.lora, run_dir / "train")
    t1 = time.perf_counter()
    atomic_write_json(run_dir / "train" / "train_report.json", report)
    write_stage_reports(run_dir / "train", sft, stage_timing([], t1 - t0))

    base = text_student.base_llm()
    student = text_student.trained_llm(report["model_dir"])
    before_rows, before = evaluate_llm(base, dev, cfg.recipe, params, cfg.exec_timeout_s, cfg.max_sql_chars)
    after_rows, after = evaluate_llm(student, dev, cfg.recipe, params, cfg.exec_timeout_s, cfg.max_sql_chars)
    t2 = time.perf_counter()
    eval_dir = run_dir / "eval"
    rows = [{**r, "model": "base"} for r in before_rows] + [{**r, "model": "student"} for r in after_rows]
    pipeline.write_parquet(eval_dir / "predictions.parquet", rows)
    write_stage_reports(
        eval_dir, [{**r, "sample_id": f"{r['model']}:{r['example_id']}"} for r in rows], stage_timing([], t2 - t1)
    )
    lineage_path = run_dir / "reports" / "lineage.json"
    lineage = json.loads(lineage_path.read_text()) if lineage_path.exists() else {}
    lineage = {
        **lineage,
        "student_fingerprint": after["model"],
        "student_model_dir": report["model_dir"],
        "base_fingerprint": before["model"],
    }
    atomic_write_json(lineage_path, lineage)
    atomic_write_json(
        eval_dir / "eval_report.json",
        {"before": before, "after": after, "delta_gold_match": after["gold_match_rate"] - before["gold_match_rate"]},
    )
    pipeline.write_run_reports(run_dir)
    atomic_write_json(run_dir / "train" / STUDENT_DONE, {"inputs_key": key})
    return {"train": report, "before": before, "after": after, "lineage": lineage, "reused": False}
