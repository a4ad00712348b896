"""Student stage: LoRA SFT on this run's export, then base vs student on the dev split.

Imports torch through `resources.training.sft_text` (TRL SFTTrainer); the asset imports this module only when it runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from qc_assets.fastdistill import pipeline
from qc_assets.fastdistill.config import StudentConfig
from qc_assets.fastdistill.reports import stage_timing, write_stage_reports
from qc_assets.fastdistill.student import evaluate_llm
from resources.training.sft_text import TextLoraSpec, train_lora
from resources.llm import DecodeParams
from resources.llm.transformers_backend import TransformersChatLLM
from resources.store import atomic_write_json, inputs_hash, iter_jsonl


def _base_location(base_model_path: str, gguf_file: str) -> tuple[Path, str | None]:
    if base_model_path:
        return Path(base_model_path), gguf_file or None
    from resources.llm.smollm2 import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    return gguf.parent, gguf.name


STUDENT_DONE = "student_done.json"  # written last: its inputs key marks a finished train + eval


def inputs_key(student_cfg: StudentConfig, base_path: Path, gguf_file: str | None, sft: list, dev: list) -> str:
    """What the student and its eval depend on; the base model counts by its files' names and sizes."""
    base = Path(base_path) / gguf_file if gguf_file else Path(base_path)
    files = [base] if base.is_file() else sorted(p for p in base.glob("*") if p.is_file())
    payload = {"config": asdict(student_cfg), "base": [(str(p), p.stat().st_size) for p in files],
               "sft": sft, "dev": dev}
    return inputs_hash(payload)


def _finished(run_dir: Path, key: str) -> dict | None:
    """The earlier result when train + eval finished with these inputs: a re-run redoes nothing."""
    done = run_dir / "train" / STUDENT_DONE
    reports = [run_dir / "train" / "train_report.json", run_dir / "eval" / "eval_report.json",
               run_dir / "reports" / "lineage.json"]
    if not done.is_file() or json.loads(done.read_text(encoding="utf-8")).get("inputs_key") != key:
        return None
    if not all(p.is_file() for p in reports):  # a report removed since: train + eval again
        return None
    evaluation = json.loads((run_dir / "eval" / "eval_report.json").read_text(encoding="utf-8"))
    return {"train": json.loads((run_dir / "train" / "train_report.json").read_text(encoding="utf-8")),
            "before": evaluation["before"], "after": evaluation["after"],
            "lineage": json.loads((run_dir / "reports" / "lineage.json").read_text(encoding="utf-8")),
            "reused": True}


def run_student(run_dir: Path, student_cfg: StudentConfig) -> dict:
    run_dir = Path(run_dir)
    cfg = pipeline.load_config(run_dir)
    base_path, gguf_file = _base_location(student_cfg.base_model_path, student_cfg.gguf_file)
    sft = list(iter_jsonl(run_dir / "export" / "sft_chatml.jsonl"))
    dev = [r for r in pipeline.read_rows(run_dir / "dedup" / "records.parquet") if r["split"] == "dev"]
    key = inputs_key(student_cfg, base_path, gguf_file, sft, dev)
    previous = _finished(run_dir, key)
    if previous is not None:
        return previous
    params = DecodeParams(temperature=0.0, max_new_tokens=student_cfg.eval_max_new_tokens, seed=student_cfg.seed)

    t0 = time.perf_counter()
    spec = TextLoraSpec(max_steps=student_cfg.steps, batch_size=student_cfg.batch_size,
                        learning_rate=student_cfg.learning_rate, r=student_cfg.lora_r, alpha=student_cfg.lora_alpha,
                        seed=student_cfg.seed, warmup_ratio=student_cfg.warmup_ratio,
                        max_grad_norm=student_cfg.max_grad_norm)
    report = train_lora(base_path, gguf_file, [r["messages"] for r in sft], spec, run_dir / "train",
                        device=student_cfg.device, dtype=student_cfg.dtype, max_length=student_cfg.max_length,
                        cpu_threads=student_cfg.cpu_threads)
    t1 = time.perf_counter()
    atomic_write_json(run_dir / "train" / "train_report.json", report)
    write_stage_reports(run_dir / "train", sft, stage_timing([], t1 - t0))

    threads = student_cfg.cpu_threads
    device, dtype = student_cfg.device, student_cfg.dtype
    base = TransformersChatLLM(base_path, gguf_file=gguf_file, batch_size=8, num_threads=threads, device=device,
                               dtype=dtype)
    student = TransformersChatLLM(report["model_dir"], batch_size=8, num_threads=threads, device=device, dtype=dtype)
    before_rows, before = evaluate_llm(base, dev, cfg.recipe, params, cfg.exec_timeout_s, cfg.max_sql_chars)
    after_rows, after = evaluate_llm(student, dev, cfg.recipe, params, cfg.exec_timeout_s, cfg.max_sql_chars)
    t2 = time.perf_counter()
    eval_dir = run_dir / "eval"
    rows = [{**r, "model": "base"} for r in before_rows] + [{**r, "model": "student"} for r in after_rows]
    pipeline.write_parquet(eval_dir / "predictions.parquet", rows)
    write_stage_reports(eval_dir, [{**r, "sample_id": f"{r['model']}:{r['example_id']}"} for r in rows],
                        stage_timing([], t2 - t1))
    lineage_path = run_dir / "reports" / "lineage.json"
    lineage = json.loads(lineage_path.read_text()) if lineage_path.exists() else {}
    lineage = {**lineage, "student_fingerprint": after["model"], "student_model_dir": report["model_dir"],
               "base_fingerprint": before["model"]}
    atomic_write_json(lineage_path, lineage)
    atomic_write_json(eval_dir / "eval_report.json", {"before": before, "after": after,
                                                      "delta_gold_match": after["gold_match_rate"] - before["gold_match_rate"]})
    pipeline.write_run_reports(run_dir)
    atomic_write_json(run_dir / "train" / STUDENT_DONE, {"inputs_key": key})
    return {"train": report, "before": before, "after": after, "lineage": lineage, "reused": False}
