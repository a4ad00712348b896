"""Select kept candidates by config rules and export SFT chatml and preference pairs.

- keep: passes the cheap gates, executes, matches gold (if required), reaches `min_score`; at most
  `max_per_input` best candidates of one input (Data Distillation: many samples, then filter);
- SFT export: chatml `messages` [system, user, assistant] with the production prompt;
- preference pairs (Preference KD): per input, the best kept candidate vs the worst candidate with
  a strictly lower score;
- rationale recipe (Distilling Step-by-Step): `rationale` and `answer` exported as separate fields,
  the assistant message keeps both sections.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from qc_assets.fastdistill.prompts import build_messages


@dataclass(frozen=True)
class KeepRules:
    require_exec_pass: bool = True
    require_gold_match: bool = True
    min_score: float = 0.0
    max_per_input: int = 1

    def __post_init__(self) -> None:
        if self.max_per_input < 1:
            raise ValueError(f"max_per_input must be >= 1, got {self.max_per_input}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")


def _rule_reason(row: dict, rules: KeepRules) -> str | None:
    if row["reject_reason"] is not None:
        return row["reject_reason"]
    if rules.require_exec_pass and not row["exec_pass"]:
        return f"exec_{row['exec_error_class']}"
    if rules.require_gold_match and row.get("gold_sql") and not row["gold_match"]:
        return "gold_mismatch"
    if row["score"] < rules.min_score:
        return "below_min_score"
    return None


def select_rows(rows: Sequence[dict], rules: KeepRules) -> list[dict]:
    """Every row with `kept` and `keep_reject_reason`; ties broken by candidate index (stable)."""
    by_input: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_input[row["sample_id"]].append({**row, "keep_reject_reason": _rule_reason(row, rules)})
    out = []
    for group in by_input.values():
        eligible = sorted(
            (r for r in group if r["keep_reject_reason"] is None), key=lambda r: (-r["score"], r["candidate_index"])
        )
        keep_ids = {r["candidate_id"] for r in eligible[: rules.max_per_input]}
        for row in sorted(group, key=lambda r: r["candidate_index"]):
            kept = row["candidate_id"] in keep_ids
            reason = row["keep_reject_reason"] or (None if kept else "not_best_of_input")
            out.append({**row, "kept": kept, "keep_reject_reason": reason})
    return out


def assistant_text(row: dict) -> str:
    if row["recipe"] == "rationale" and row.get("rationale"):
        return f"### RATIONALE\n{row['rationale']}\n### ANSWER\n{row['sql']}"
    return row["sql"]


def sft_rows(rows: Sequence[dict]) -> list[dict]:
    """chatml rows for kept train-split candidates."""
    out = []
    for row in rows:
        if not row["kept"] or row["split"] != "train":
            continue
        messages = build_messages(row, row["recipe"]) + [{"role": "assistant", "content": assistant_text(row)}]
        out.append(
            {
                "sample_id": row["sample_id"],
                "candidate_id": row["candidate_id"],
                "db_id": row["db_id"],
                "lang": row["lang"],
                "messages": messages,
                "rationale": row.get("rationale"),
                "answer": row["sql"],
                "score": row["score"],
                "teacher_fingerprint": row["teacher_fingerprint"],
            }
        )
    return out


def preference_pairs(rows: Sequence[dict]) -> list[dict]:
    """(prompt, chosen, rejected) per train input: best kept vs lowest-scored candidate with text."""
    by_input: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["split"] == "train":
            by_input[row["sample_id"]].append(row)
    pairs = []
    for group in by_input.values():
        chosen = [r for r in group if r["kept"]]
        rejected = [r for r in group if not r["kept"] and r["teacher_text"] is not None and r["sql"]]
        if not chosen or not rejected:
            continue
        best = max(chosen, key=lambda r: (r["score"], -r["candidate_index"]))
        worst = min(rejected, key=lambda r: (r["score"], r["candidate_index"]))
        if worst["score"] >= best["score"] or assistant_text(worst) == assistant_text(best):
            continue
        pairs.append(
            {
                "sample_id": best["sample_id"],
                "prompt": build_messages(best, best["recipe"]),
                "chosen": assistant_text(best),
                "rejected": assistant_text(worst),
                "chosen_score": best["score"],
                "rejected_score": worst["score"],
                "rejected_reason": worst["keep_reject_reason"],
            }
        )
    return pairs
