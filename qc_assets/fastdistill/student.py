"""Student evaluation on the held-out split with the same gates and exec eval as the teacher.

Training itself needs torch/TRL and lives in `resources/training/sft_text.py`; this module only needs a
`ChatLLM`, so the base model and the trained student are scored by identical code.
"""

from __future__ import annotations

from collections.abc import Sequence

from qc_assets.fastdistill.cleaning import clean_sql, rule_reject_reason, split_rationale
from qc_assets.fastdistill.prompts import build_messages
from qc_assets.fastdistill.sql_eval import SqlEvaluator, exec_eval
from resources.llm import ChatLLM, DecodeParams


def evaluate_llm(
    llm: ChatLLM,
    records: Sequence[dict],
    recipe: str,
    params: DecodeParams,
    timeout_s: float = 2.0,
    max_sql_chars: int = 2000,
) -> tuple[list[dict], dict]:
    """Greedy answers for `records`, cleaned, rule-filtered and executed against gold."""
    if not records:
        raise ValueError("no held-out records to evaluate on; the dev split is empty")
    outputs = llm.chat([build_messages(r, recipe) for r in records], params)
    rows = []
    with SqlEvaluator(timeout_s=timeout_s) as evaluator:
        for rec, completions in zip(records, outputs, strict=True):
            comp = completions[0]
            text = comp.text if comp.ok else None
            answer = split_rationale(text)[1] if recipe == "rationale" and text else text
            sql = clean_sql(answer)
            reason = "generation_error" if text is None else rule_reject_reason(sql, max_sql_chars)
            result = exec_eval(evaluator, rec["db_path"], sql, rec["gold_sql"]) if reason is None else None
            rows.append(
                {
                    "example_id": rec["example_id"],
                    "lang": rec["lang"],
                    "question": rec["question"],
                    "gold_sql": rec["gold_sql"],
                    "text": text,
                    "error": comp.error,
                    "sql": sql,
                    "reject_reason": reason,
                    "exec_pass": bool(result and result.exec_pass),
                    "gold_match": bool(result and result.gold_match),
                    "exec_error_class": result.exec_error_class if result else None,
                }
            )
    n = len(rows)
    summary = {
        "model": llm.fingerprint,
        "count": n,
        "rule_pass_rate": sum(r["reject_reason"] is None for r in rows) / n,
        "exec_pass_rate": sum(r["exec_pass"] for r in rows) / n,
        "gold_match_rate": sum(r["gold_match"] for r in rows) / n,
    }
    return rows, summary
