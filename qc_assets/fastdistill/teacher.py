"""Teacher stage glue: records -> work items, cache rows -> one candidate row per completion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qc_assets.fastdistill.canonical import canonical_json
from qc_assets.fastdistill.generation import GenerationCache, GenerationConfig, GenerationStats, WorkItem, generate
from qc_assets.fastdistill.prompts import build_messages, prompt_hash
from resources.llm import ChatLLM, DecodeParams

CACHE_FILE = "generation_cache.jsonl"


def decode_profile_for(params: DecodeParams, recipe: str) -> str:
    """The decode profile that enters sample_id: decode params plus the prompt recipe and its hash,
    so a changed prompt or sampling setting is a new sample, never a stale cache hit."""
    return canonical_json({**params.as_dict(), "recipe": recipe, "prompt_hash": prompt_hash(recipe)})


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # About 3 characters per token for mixed English/Chinese/SQL; the budget needs a bound, not a count.
    return sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)


def work_items(records: Sequence[dict], recipe: str) -> list[WorkItem]:
    items = []
    for rec in records:
        messages = build_messages(rec, recipe)
        items.append(WorkItem(rec["sample_id"], messages, estimate_prompt_tokens(messages)))
    return items


def run_teacher(
    llm: ChatLLM,
    records: Sequence[dict],
    params: DecodeParams,
    recipe: str,
    stage_dir: Path,
    config: GenerationConfig,
) -> tuple[GenerationCache, GenerationStats]:
    cache = GenerationCache(Path(stage_dir) / CACHE_FILE, llm.fingerprint, config.max_attempts)
    stats = generate(llm, work_items(records, recipe), params, cache, config)
    return cache, stats


def candidate_rows(records: Sequence[dict], cache: GenerationCache, recipe: str) -> list[dict]:
    """One row per (sample, completion index). A failed request gives n rows with `error` set and
    `text` None, so it is counted and reported, never scored as an empty answer."""
    rows = []
    for rec in records:
        cached = cache.rows.get(rec["sample_id"])
        if cached is None:
            raise ValueError(f"sample {rec['sample_id']} has no teacher output in {cache.path}")
        n = cached["decode"]["n"]
        completions = cached["completions"] or [None] * n
        for k, comp in enumerate(completions):
            text = comp["text"] if comp else None
            error = (comp["error"] if comp else None) or (cached["error"] if text is None else None)
            rows.append(
                {
                    "candidate_id": f"{rec['sample_id']}:{k}",
                    "sample_id": rec["sample_id"],
                    "candidate_index": k,
                    "example_id": rec["example_id"],
                    "split": rec["split"],
                    "lang": rec["lang"],
                    "db_id": rec["db_id"],
                    "db_path": rec["db_path"],
                    "schema": rec["schema"],
                    "question": rec["question"],
                    "gold_sql": rec["gold_sql"],
                    "recipe": recipe,
                    "teacher_fingerprint": cached["teacher_fingerprint"],
                    "teacher_text": text,
                    "teacher_error": error,
                    "finish_reason": comp["finish_reason"] if comp else "error",
                    "prompt_tokens": comp["prompt_tokens"] if comp else 0,
                    "completion_tokens": comp["completion_tokens"] if comp else 0,
                    "latency_s": comp["latency_s"] if comp else 0.0,
                    "attempt": cached["attempt"],
                }
            )
    return rows
