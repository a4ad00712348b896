"""Quality gates in cost order: clean -> rule filter -> execution eval -> (optional) LLM judge -> score.

A candidate that fails a cheaper gate never reaches a dearer one: rule rejects are not executed,
exec failures are not judged. Every row keeps the reason it stopped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from qc_assets.fastdistill.cleaning import clean_sql, rule_reject_reason, split_rationale
from qc_assets.fastdistill.generation import GenerationCache, GenerationConfig, WorkItem, generate
from qc_assets.fastdistill.sql_eval import SqlEvaluator, exec_eval
from resources.llm import ChatLLM, DecodeParams

EXEC_SCORE_GOLD = 1.0
EXEC_SCORE_RUNS = 0.3  # executes but returns a different result than gold


def gate_rows(rows: Sequence[dict], max_sql_chars: int) -> list[dict]:
    """Add `rationale`, `sql` and `reject_reason` (None = passes the cheap gates)."""
    out = []
    for row in rows:
        if row["teacher_text"] is None:
            out.append({**row, "rationale": None, "sql": None, "reject_reason": "generation_error"})
            continue
        rationale, answer = split_rationale(row["teacher_text"]) if row["recipe"] == "rationale" else (None, None)
        sql = clean_sql(answer if answer is not None else row["teacher_text"])
        out.append({**row, "rationale": rationale, "sql": sql, "reject_reason": rule_reject_reason(sql, max_sql_chars)})
    return out


_WORKER: SqlEvaluator | None = None


def _init_worker(timeout_s: float, max_rows: int) -> None:
    global _WORKER
    _WORKER = SqlEvaluator(timeout_s, max_rows)


def _eval_one(job: tuple[str, str, str | None]) -> dict:
    db_path, sql, gold = job
    return exec_eval(_WORKER, db_path, sql, gold).as_dict()


_EMPTY_EXEC = {
    "exec_pass": False,
    "exec_error": None,
    "exec_error_class": None,
    "gold_match": False,
    "result_signature": None,
    "gold_signature": None,
    "elapsed_s": 0.0,
}


def exec_rows(rows: Sequence[dict], timeout_s: float, max_rows: int, workers: int = 1) -> list[dict]:
    """Execute rows that passed the rule filter; persistent sandboxed connections per worker."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(r["db_path"], r["sql"], r.get("gold_sql")) for r in rows if r["reject_reason"] is None]
    if workers == 1 or len(jobs) < 64:
        _init_worker(timeout_s, max_rows)
        results = [_eval_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(timeout_s, max_rows)) as pool:
            results = list(pool.map(_eval_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    it = iter(results)
    out = []
    for row in rows:
        res = dict(_EMPTY_EXEC) if row["reject_reason"] is not None else next(it)
        res["exec_elapsed_s"] = res.pop("elapsed_s")
        out.append({**row, **res})
    return out


JUDGE_SYSTEM = (
    "You grade Text2SQL answers. Given a schema, a question and a candidate SQLite query, reply with one "
    "digit from 1 (wrong) to 5 (fully answers the question)."
)
_DIGIT = re.compile(r"[1-5]")


def judge_rows(
    llm: ChatLLM, rows: Sequence[dict], params: DecodeParams, cache_path: Path, config: GenerationConfig
) -> tuple[list[dict], dict]:
    """LLM judge for rows that executed (exec failures short-circuit to no judge call), on its own
    bounded queue and its own cache; `judge_score` in [0, 1] or None when not judged/unparsable."""
    items, by_key = [], {}
    for row in rows:
        if not row["exec_pass"]:
            continue
        user = f"Schema:\n{row['schema']}\n\nQuestion: {row['question']}\n\nCandidate SQL:\n{row['sql']}"
        key = hashlib.sha256(f"{row['candidate_id']}|{row['sql']}|{JUDGE_SYSTEM}".encode()).hexdigest()
        by_key[row["candidate_id"]] = key
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]
        items.append(WorkItem(key, messages, len(user) // 3 + 40))
    cache = GenerationCache(cache_path, llm.fingerprint, config.max_attempts)
    stats = generate(llm, items, params, cache, config)
    out = []
    for row in rows:
        key = by_key.get(row["candidate_id"])
        score = raw = None
        if key is not None:
            comps = cache.rows[key]["completions"]
            raw = comps[0]["text"] if comps else None
            match = _DIGIT.search(raw or "")
            score = (int(match.group()) - 1) / 4 if match else None
        out.append({**row, "judge_raw": raw, "judge_score": score})
    return out, {
        "judge_calls": stats.teacher_calls,
        "judge_cached": stats.cached,
        "judged": len(items),
        "judge_wall_s": stats.wall_s,
        "judge_latencies_s": stats.latencies_s,
    }


def score_rows(rows: Sequence[dict]) -> list[dict]:
    """Exec-based score (gold match 1.0, runs but differs 0.3, else 0.0; without gold, running is 1.0),
    averaged with the judge score where there is one."""
    out = []
    for row in rows:
        has_gold = bool(row.get("gold_sql"))
        if not row["exec_pass"]:
            exec_score = 0.0
        elif not has_gold:
            exec_score = EXEC_SCORE_GOLD
        else:
            exec_score = EXEC_SCORE_GOLD if row["gold_match"] else EXEC_SCORE_RUNS
        judge = row.get("judge_score")
        score = exec_score if judge is None else (exec_score + judge) / 2
        out.append({**row, "exec_score": exec_score, "judge_score": judge, "score": score})
    return out
