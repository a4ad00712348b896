"""Base-vs-fused evaluation and the regression gate.

Stage-B: the production verdict prompt on held-out groups (the eval side of Stage-B's own split, read
from its `splits.jsonl`; a seeded split of the Stage-A records when Stage-B has not run), scored with
the Stage-B verdict parser: verdict accuracy and format-ok rate. Stage-A: the summary prompt on
held-out photos, scored for format validity (one non-empty, non-degenerate line). The gate fails when
any metric of the fused model falls more than `tolerance` below the base model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from qc_assets.markdown import md_table
from qc_assets.stage_a import prompts as stage_a_prompts
from qc_assets.stage_a.records import is_degenerate
from qc_assets.stage_b.prompts import build_messages
from qc_assets.stage_b.split import split_groups
from qc_assets.stage_b.verdict import parse_verdict
from resources.store import read_jsonl

GATED_METRICS = ("stage_b/verdict_accuracy", "stage_b/format_ok_rate", "stage_a/format_valid_rate")


class ChatGenerator(Protocol):
    def generate(self, conversations: Sequence[list[dict]], images: Sequence[list[str]],
                 max_new_tokens: int) -> list[str]: ...


def held_out_records(records: list[dict], stage_b_dir: Path, seed: int, eval_fraction: float = 0.2
                     ) -> tuple[list[dict], str]:
    """(held-out records, where the split came from). Stage-B's latest recorded split wins."""
    splits = read_jsonl(Path(stage_b_dir) / "splits.jsonl")
    if splits:
        ids = set(splits[-1]["eval"])
        held = [r for r in records if r.get("record_id") in ids]
        if held:
            return held, f"stage_b_guidance splits.jsonl run {splits[-1].get('run_id')}"
    _, held = split_groups(records, eval_fraction, seed)
    return held, f"seeded split of Stage-A records (fraction {eval_fraction}, seed {seed}): no Stage-B split found"


def stage_a_format_valid(text: str | None) -> bool:
    """A usable Stage-A summary: one non-empty line that is not degenerate."""
    if text is None:
        return False
    stripped = text.strip()
    return bool(stripped) and "\n" not in stripped and not is_degenerate(stripped)


def evaluate(generator: ChatGenerator, mission, guidance, records: Sequence[dict], images_root: Path,
             max_groups: int, stage_a_images: int, max_new_tokens: int) -> dict:
    """Metrics + a few raw answers for one model over the held-out records (in record_id order)."""
    recs = sorted(records, key=lambda r: r["record_id"])[:max_groups]
    convs = [build_messages(mission, guidance, r) for r in recs]
    answers = generator.generate(convs, [[] for _ in convs], max_new_tokens) if convs else []
    parsed = [parse_verdict(a) for a in answers]
    correct = sum(p.format_ok and p.verdict == r["label"] for p, r in zip(parsed, recs))
    formatted = sum(p.format_ok for p in parsed)

    photos = []
    for r in sorted(records, key=lambda r: r["record_id"]):
        for rel in r["images"]:
            path = Path(images_root) / mission.name / rel
            if path.is_file() and len(photos) < stage_a_images:
                photos.append(str(path))
    user = [{"type": "image"}, {"type": "text", "text": stage_a_prompts.user_prompt(mission)}]
    a_convs = [[{"role": "system", "content": stage_a_prompts.system_prompt()}, {"role": "user", "content": user}]
               for _ in photos]
    summaries = generator.generate(a_convs, [[p] for p in photos], max_new_tokens) if photos else []
    valid = sum(stage_a_format_valid(s) for s in summaries)
    n_b, n_a = len(recs), len(summaries)
    return {
        "stage_b/verdict_accuracy": correct / n_b if n_b else 0.0,
        "stage_b/format_ok_rate": formatted / n_b if n_b else 0.0,
        "stage_a/format_valid_rate": valid / n_a if n_a else 0.0,
        "stage_b/n_groups": n_b,
        "stage_a/n_images": n_a,
        "examples": [{"record_id": r["record_id"], "label": r["label"], "answer": a[:200]}
                     for r, a in list(zip(recs, answers))[:3]],
    }


def regression_gate(base: dict, fused: dict, tolerance: float, metrics: Sequence[str] = GATED_METRICS) -> dict:
    """{passed, tolerance, rows: [{metric, base, fused, delta, ok}], failures: [metric names]}.

    >>> regression_gate({"m": 0.8}, {"m": 0.7}, 0.05, ["m"])["failures"]
    ['m']
    >>> regression_gate({"m": 0.8}, {"m": 0.78}, 0.05, ["m"])["passed"]
    True
    """
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance must be in [0, 1], got {tolerance}")
    rows = []
    for m in metrics:
        if m not in base or m not in fused:
            raise ValueError(f"metric {m!r} missing from {'base' if m not in base else 'fused'} eval results")
        delta = fused[m] - base[m]
        # A tiny epsilon so that equal rates computed in different orders never fail the gate.
        rows.append({"metric": m, "base": base[m], "fused": fused[m], "delta": delta, "ok": delta >= -tolerance - 1e-9})
    failures = [r["metric"] for r in rows if not r["ok"]]
    return {"passed": not failures, "tolerance": tolerance, "rows": rows, "failures": failures}


def gate_table(gate: dict) -> str:
    return md_table(["metric", "base", "fused", "delta", "ok"],
                    [(r["metric"], f"{r['base']:.3f}", f"{r['fused']:.3f}", f"{r['delta']:+.3f}",
                      "yes" if r["ok"] else "NO") for r in gate["rows"]])
