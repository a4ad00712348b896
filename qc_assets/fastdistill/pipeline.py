"""FastDistill stages as plain functions over a run folder `<data_root>/fastdistill/<run_id>/`.

Each stage reads the previous stage's Parquet, writes its own `<stage>/` folder (Parquet rows +
manifest/quality/timing JSON) and returns a summary for the asset's metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl

from qc_assets.fastdistill.canonical import canonicalize_frame, dedup_frame
from qc_assets.fastdistill.config import FastDistillSettings
from qc_assets.fastdistill.generation import GenerationConfig
from qc_assets.fastdistill.loaders import load_records_jsonl, load_spider, load_wikisql
from qc_assets.fastdistill.reports import run_metrics, stage_timing, timing_report, write_stage_reports
from qc_assets.fastdistill.scoring import exec_rows, gate_rows, judge_rows, score_rows
from qc_assets.fastdistill.select_export import KeepRules, preference_pairs, select_rows, sft_rows
from qc_assets.fastdistill.teacher import candidate_rows, decode_profile_for, run_teacher
from qc_assets.fastdistill.text2sql_data import split_examples, synthetic_dataset
from resources.llm import ChatLLM, DecodeParams
from resources.store import atomic_write_json, atomic_write_jsonl, atomic_write_parquet

RUN_CONFIG = "run_config.json"
STAGES = ("canonical", "dedup", "teacher", "filter", "exec_eval", "score", "select", "export", "train", "eval")
STUDENT_STAGES = ("train", "eval")


def write_parquet(path: Path, rows: list[dict]) -> Path:
    return atomic_write_parquet(path, pl.DataFrame(rows, infer_schema_length=None))


def read_rows(path: Path) -> list[dict]:
    if not Path(path).exists():
        raise ValueError(f"{path} does not exist; materialize the upstream FastDistill stage first")
    return pl.read_parquet(path).to_dicts()


def load_config(run_dir: Path) -> FastDistillSettings:
    path = Path(run_dir) / RUN_CONFIG
    if not path.exists():
        raise ValueError(f"{path} missing; materialize fastdistill_inputs for this run first")
    return FastDistillSettings.from_dict(json.loads(path.read_text())["config"])


def _load_source(cfg: FastDistillSettings, run_dir: Path) -> list[dict]:
    if cfg.source == "synthetic":
        return synthetic_dataset(run_dir / "source", cfg.seed, cfg.per_template, cfg.dev_fraction)
    if cfg.source == "wikisql":
        records = load_wikisql(Path(cfg.data_path), Path(cfg.tables_path), Path(cfg.db_path), "train")
    elif cfg.source == "spider":
        records = load_spider(Path(cfg.data_path), Path(cfg.db_path), "train")
    else:
        records = load_records_jsonl(Path(cfg.data_path))
    if {r["split"] for r in records} == {"train", "dev"}:
        return records
    # one file without a held-out part: split it the same seeded way as the synthetic set
    return split_examples(records, cfg.seed, cfg.dev_fraction)


def _cap(records: list[dict], split: str, limit: int) -> list[dict]:
    chosen = [r for r in records if r["split"] == split]
    return chosen[:limit] if limit else chosen


def stage_inputs(run_dir: Path, run_id: str, cfg: FastDistillSettings) -> dict:
    """Load/generate, canonicalize, dedup by sample_id; records run_config.json."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    existing = run_dir / RUN_CONFIG
    if existing.exists() and json.loads(existing.read_text())["config"] != cfg.as_dict():
        raise ValueError(f"run {run_id!r} was started with another config ({existing}); use a new run_id")
    atomic_write_json(existing, {"run_id": run_id, "config": cfg.as_dict()})
    records = _load_source(cfg, run_dir)
    records = _cap(records, "train", cfg.max_train) + _cap(records, "dev", cfg.max_dev)
    profile = decode_profile_for(cfg.decode_params(), cfg.recipe)
    canonical = canonicalize_frame(pl.DataFrame(records, infer_schema_length=None), profile)
    t_canon = time.perf_counter()
    write_parquet(run_dir / "canonical" / "records.parquet", canonical.to_dicts())
    write_stage_reports(run_dir / "canonical", canonical.to_dicts(), stage_timing([], t_canon - started))
    deduped, dropped = dedup_frame(canonical)
    rows = deduped.to_dicts()
    write_parquet(run_dir / "dedup" / "records.parquet", rows)
    reports = write_stage_reports(run_dir / "dedup", rows, stage_timing([], time.perf_counter() - t_canon))
    return {"rows": rows, "loaded": canonical.height, "duplicates_dropped": dropped, "reports": reports}


def stage_teacher(run_dir: Path, cfg: FastDistillSettings, llm: ChatLLM) -> dict:
    """Teacher outputs for train inputs; finished samples come from the cache, never the teacher."""
    run_dir = Path(run_dir)
    records = [r for r in read_rows(run_dir / "dedup" / "records.parquet") if r["split"] == "train"]
    gen_cfg = GenerationConfig(cfg.max_in_flight, cfg.chunk_size, cfg.max_tokens_in_flight, cfg.max_attempts)
    cache, stats = run_teacher(llm, records, cfg.decode_params(), cfg.recipe, run_dir / "teacher", gen_cfg)
    rows = candidate_rows(records, cache, cfg.recipe)
    write_parquet(run_dir / "teacher" / "candidates.parquet", rows)
    invocation = {
        "teacher_fingerprint": llm.fingerprint,
        "requested": stats.requested,
        "cached": stats.cached,
        "teacher_calls": stats.teacher_calls,
        "failed_samples": stats.failed_samples,
        "completion_tokens": stats.completion_tokens,
        "wall_s": stats.wall_s,
        "teacher_tokens_per_sec": stats.teacher_tokens_per_sec,
        "max_in_flight_seen": stats.max_in_flight_seen,
    }
    # Keep every invocation: a re-run served from the cache must not erase what the first run cost.
    stats_path = run_dir / "teacher" / "generation_stats.json"
    history = json.loads(stats_path.read_text())["invocations"] if stats_path.exists() else []
    history.append(invocation)
    called = [h for h in history if h["teacher_calls"]]
    totals = {
        "completion_tokens": sum(h["completion_tokens"] for h in called),
        "wall_s": sum(h["wall_s"] for h in called),
        "teacher_calls": sum(h["teacher_calls"] for h in history),
    }
    atomic_write_json(stats_path, {"invocations": history, "totals": totals})
    # Latencies of every cached request (all invocations), wall time of the invocations that called.
    latencies = sorted({(r["sample_id"], r["latency_s"]) for r in rows if r["teacher_text"] is not None})
    timing = stage_timing([lat for _, lat in latencies], totals["wall_s"])
    report_rows = [{**r, "reject_reason": "generation_error" if r["teacher_text"] is None else None} for r in rows]
    reports = write_stage_reports(run_dir / "teacher", report_rows, timing, "candidate_id")
    summary = {**invocation, "total_teacher_calls": totals["teacher_calls"]}
    return {**summary, "rows": rows, "reports": reports}


def stage_gates(run_dir: Path, cfg: FastDistillSettings, judge_llm: ChatLLM | None = None) -> dict:
    """clean + rule filter -> exec eval -> judge (optional) -> score, one folder per stage."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / "teacher" / "candidates.parquet")
    t0 = time.perf_counter()
    rows = gate_rows(rows, cfg.max_sql_chars)
    t1 = time.perf_counter()
    write_parquet(run_dir / "filter" / "candidates.parquet", rows)
    write_stage_reports(run_dir / "filter", rows, stage_timing([], t1 - t0), "candidate_id")
    rows = exec_rows(rows, cfg.exec_timeout_s, cfg.exec_max_rows, cfg.exec_workers)
    t2 = time.perf_counter()
    write_parquet(run_dir / "exec_eval" / "candidates.parquet", rows)
    exec_times = [r["exec_elapsed_s"] for r in rows if r["reject_reason"] is None]
    exec_reports = write_stage_reports(run_dir / "exec_eval", rows, stage_timing(exec_times, t2 - t1), "candidate_id")
    judge_info: dict = {}
    latencies: list[float] = []
    if cfg.judge:
        if judge_llm is None:
            raise ValueError("run config has judge=True but no judge LLM was given")
        judge_cfg = GenerationConfig(max_in_flight=cfg.judge_max_in_flight, chunk_size=1)
        params = DecodeParams(temperature=0.0, max_new_tokens=4, seed=cfg.seed)
        rows, judge_info = judge_rows(judge_llm, rows, params, run_dir / "score" / "judge_cache.jsonl", judge_cfg)
        latencies = judge_info.pop("judge_latencies_s")
    rows = score_rows(rows)
    t3 = time.perf_counter()
    write_parquet(run_dir / "score" / "candidates.parquet", rows)
    reports = write_stage_reports(run_dir / "score", rows, stage_timing(latencies, t3 - t2), "candidate_id")
    return {"rows": rows, "exec_reports": exec_reports, "reports": reports, **judge_info}


def stage_select_export(run_dir: Path, cfg: FastDistillSettings) -> dict:
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / "score" / "candidates.parquet")
    t0 = time.perf_counter()
    rules = KeepRules(cfg.require_exec_pass, cfg.require_gold_match, cfg.min_score, cfg.max_per_input)
    rows = select_rows(rows, rules)
    t1 = time.perf_counter()
    write_parquet(run_dir / "select" / "candidates.parquet", rows)
    select_reports = write_stage_reports(run_dir / "select", rows, stage_timing([], t1 - t0), "candidate_id")
    sft, pairs = sft_rows(rows), preference_pairs(rows)
    export = run_dir / "export"
    atomic_write_jsonl(export / "sft_chatml.jsonl", sft)
    atomic_write_jsonl(export / "preference_pairs.jsonl", pairs)
    if sft:
        write_parquet(export / "sft_chatml.parquet", sft)
    if pairs:
        write_parquet(export / "preference_pairs.parquet", pairs)
    export_reports = write_stage_reports(export, sft, stage_timing([], time.perf_counter() - t1))
    run_reports = write_run_reports(run_dir)
    return {
        "rows": rows,
        "sft": sft,
        "pairs": pairs,
        "select_reports": select_reports,
        "export_reports": export_reports,
        "run_reports": run_reports,
    }


def write_run_reports(run_dir: Path) -> dict:
    """Run-level timing (every stage so far), final quality and the seed-004 metrics."""
    run_dir = Path(run_dir)
    stages = {}
    for stage in STAGES:
        path = run_dir / stage / "timing_report.json"
        if path.exists():
            stages.update(json.loads(path.read_text())["stages"])
    timing = timing_report(stages)
    quality_path = run_dir / "select" / "quality_report.json"
    quality = json.loads(quality_path.read_text()) if quality_path.exists() else None
    gen_path = run_dir / "teacher" / "generation_stats.json"
    gen = json.loads(gen_path.read_text())["totals"] if gen_path.exists() else {"completion_tokens": 0, "wall_s": 0.0}
    train_path = run_dir / "train" / "train_report.json"
    train = json.loads(train_path.read_text()) if train_path.exists() else {}
    # kept samples per hour of the data pipeline (through export); student train/eval are not part of it
    data_wall = sum(t["wall_s"] for s, t in stages.items() if s not in STUDENT_STAGES)
    metrics = run_metrics(
        gen["completion_tokens"],
        gen["wall_s"],
        quality["kept"] if quality else 0,
        data_wall,
        train.get("train_tokens"),
        train.get("train_wall_s"),
    )
    reports_dir = run_dir / "reports"
    atomic_write_json(reports_dir / "timing_report.json", timing)
    atomic_write_json(reports_dir / "metrics.json", metrics)
    if quality is not None:
        atomic_write_json(reports_dir / "quality_report.json", quality)
    return {"timing_report": timing, "metrics": metrics, "quality_report": quality}
