"""Build the exported rows and write them: chatml JSONL + Parquet, preference pairs, rejections.

The system and user turns are `build_messages(mission, guidance, record)` itself, the production
Stage-B prompt, so the student is trained on exactly what it will be asked; the label never enters
the prompt. Every whole file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qc_assets.distill.schema import rows_frame
from qc_assets.distill.select import Judged, PreferencePair
from resources.store import atomic_write_jsonl, atomic_write_parquet

CHATML_JSONL = "distill_chatml.jsonl"
CHATML_PARQUET = "distill_chatml.parquet"
PAIRS_JSONL = "preference_pairs.jsonl"
REJECTED_JSONL = "rejected.jsonl"


def _lineage(record: dict, guidance, teacher: str) -> dict:
    hashes = record.get("image_sha256")
    if not isinstance(hashes, list) or not hashes:
        raise ValueError(f"record {record['record_id']!r} has no image_sha256 list; lineage needs the image hashes")
    return {
        "record_id": record["record_id"],
        "image_sha256": list(hashes),
        "guidance_hash": guidance.content_hash(),
        "teacher": teacher,
    }


def chatml_rows(
    judged: Sequence[Judged],
    records: dict[str, dict],
    prompts: dict[str, list[dict]],
    guidance,
    teacher: str,
    hard: set[str],
    hard_case_factor: int,
) -> list[dict]:
    """One row per kept answer, repeated `hard_case_factor` times (copy 0..f-1) for hard groups."""
    rows = []
    for j in judged:
        if not j.kept:
            continue
        rec = records[j.record_id]
        weight = hard_case_factor if j.record_id in hard else 1
        messages = [*prompts[j.record_id], {"role": "assistant", "content": j.text}]
        for copy in range(weight):
            rows.append(
                {
                    "group_id": rec["group_id"],
                    "mission": rec["mission"],
                    "label": rec["label"],
                    "guidance_version": guidance.version,
                    "messages": messages,
                    **_lineage(rec, guidance, teacher),
                    "sample": j.answer["sample"],
                    "copy": copy,
                    "weight": weight,
                    "hard_case": j.record_id in hard,
                    "answer": j.verdict,
                    "rationale": j.rationale,
                }
            )
    return rows


def pair_rows(
    pairs: Sequence[PreferencePair], records: dict[str, dict], prompts: dict[str, list[dict]], guidance, teacher: str
) -> list[dict]:
    """TRL's conversational preference format: prompt / chosen / rejected message lists."""
    rows = []
    for p in pairs:
        rec = records[p.chosen.record_id]
        rows.append(
            {
                "group_id": rec["group_id"],
                "mission": rec["mission"],
                "label": rec["label"],
                "guidance_version": guidance.version,
                **_lineage(rec, guidance, teacher),
                "prompt": prompts[p.chosen.record_id],
                "chosen": [{"role": "assistant", "content": p.chosen.text}],
                "rejected": [{"role": "assistant", "content": p.rejected_text}],
                "chosen_sample": p.chosen.answer["sample"],
                "rejected_sample": p.rejected.answer["sample"],
                "rejected_reason": p.rejected.reason,
            }
        )
    return rows


def rejected_rows(judged: Sequence[Judged]) -> list[dict]:
    return [
        {
            "record_id": j.record_id,
            "group_id": j.answer["group_id"],
            "label": j.answer["label"],
            "sample": j.answer["sample"],
            "seed": j.answer["seed"],
            "reason": j.reason,
            "verdict": j.verdict,
            "rationale_chars": None if j.rationale is None else len(j.rationale),
            "raw": j.answer.get("raw"),
            "error": j.answer.get("error"),
        }
        for j in judged
        if not j.kept
    ]


def write_outputs(out_dir: str | Path, rows: list[dict], pairs: list[dict], rejected: list[dict]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "chatml_jsonl": atomic_write_jsonl(out_dir / CHATML_JSONL, rows),
        "chatml_parquet": atomic_write_parquet(out_dir / CHATML_PARQUET, rows_frame(rows)),
        "preference_pairs": atomic_write_jsonl(out_dir / PAIRS_JSONL, pairs),
        "rejected": atomic_write_jsonl(out_dir / REJECTED_JSONL, rejected),
    }
