"""Base-vs-student evaluation per mission and the bootstrap regression gate.

Stage-B: the production verdict prompt on a mission's held-out groups (the eval side of Stage-B's own
split, read from its `splits.jsonl`; a seeded split of the Stage-A records when Stage-B has not run),
scored with the Stage-B verdict parser: verdict accuracy and format-ok rate. Stage-A: the summary
prompt on held-out photos, scored for format validity (one non-empty, non-degenerate line). Those
groups are excluded from training, so the gate never scores the student on what it learned from.

The gate is paired: each held-out item is answered by both models, and a seeded bootstrap over items
gives an interval for the mean difference (student - base). A mission blocks when, for any metric,
the whole interval lies below `min_improvement` (0 by default: a regression that resampling noise does
not explain), or when it has no held-out items at all (nothing to judge is not a pass).
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
from qc_assets.stats import paired_group_bootstrap
from resources.store import read_jsonl

GATED_METRICS = ("stage_b/verdict_accuracy", "stage_b/format_ok_rate", "stage_a/format_valid_rate")


class ChatGenerator(Protocol):
    def generate(
        self, conversations: Sequence[list[dict]], images: Sequence[list[str]], max_new_tokens: int
    ) -> list[str]: ...


def held_out_records(
    records: list[dict], stage_b_dir: Path, seed: int, eval_fraction: float = 0.2, seeded_fallback: bool = False
) -> tuple[list[dict], str]:
    """(held-out records, where the split came from). Stage-B's latest recorded split wins (its `test`
    side when it records one, else `eval`). Without one, a seeded split of the Stage-A records only when
    `seeded_fallback` (config `guidance: initial`, i.e. no Stage-B run is expected); else a ValueError."""
    splits = read_jsonl(Path(stage_b_dir) / "splits.jsonl")
    if splits:
        side = "test" if "test" in splits[-1] else "eval"
        ids = set(splits[-1][side])
        held = [r for r in records if r.get("record_id") in ids]
        if held:
            return held, f"stage_b_guidance splits.jsonl run {splits[-1].get('run_id')} ({side})"
    if not seeded_fallback:
        raise ValueError(
            f"no Stage-B held-out split matching the Stage-A records under {stage_b_dir}/splits.jsonl: "
            "re-materialize stage_b_guidance for this mission, or set guidance: initial to "
            "evaluate on a seeded split"
        )
    _, held = split_groups(records, eval_fraction, seed)
    return held, (
        f"seeded split of Stage-A records (fraction {eval_fraction}, seed {seed}; config guidance: "
        "initial): no Stage-B split found"
    )


def stage_a_format_valid(text: str | None) -> bool:
    """A usable Stage-A summary: one non-empty line that is not degenerate."""
    if text is None:
        return False
    stripped = text.strip()
    return bool(stripped) and "\n" not in stripped and not is_degenerate(stripped)


def evaluate(
    generator: ChatGenerator,
    mission,
    guidance,
    records: Sequence[dict],
    images_root: Path,
    max_groups: int,
    stage_a_images: int,
    max_new_tokens: int,
) -> dict:
    """Per-item scores (for the paired gate), their means and a few raw answers for one model."""
    recs = sorted(records, key=lambda r: r["record_id"])
    recs = recs[:max_groups] if max_groups else recs
    convs = [build_messages(mission, guidance, r) for r in recs]
    answers = generator.generate(convs, [[] for _ in convs], max_new_tokens) if convs else []
    parsed = [parse_verdict(a) for a in answers]
    correct = [float(p.format_ok and p.verdict == r["label"]) for p, r in zip(parsed, recs, strict=True)]
    formatted = [float(p.format_ok) for p in parsed]

    photos = []
    for r in sorted(records, key=lambda r: r["record_id"]):
        for rel in r["images"]:
            path = Path(images_root) / mission.name / rel
            if path.is_file() and len(photos) < stage_a_images:
                photos.append(str(path))
    user = [{"type": "image"}, {"type": "text", "text": stage_a_prompts.user_prompt(mission)}]
    a_convs = [
        [{"role": "system", "content": stage_a_prompts.system_prompt()}, {"role": "user", "content": user}]
        for _ in photos
    ]
    summaries = generator.generate(a_convs, [[p] for p in photos], max_new_tokens) if photos else []
    valid = [float(stage_a_format_valid(s)) for s in summaries]
    items = {
        "stage_b/verdict_accuracy": correct,
        "stage_b/format_ok_rate": formatted,
        "stage_a/format_valid_rate": valid,
    }
    return {
        **{m: (sum(v) / len(v) if v else 0.0) for m, v in items.items()},
        "items": items,
        "stage_b/n_groups": len(recs),
        "stage_a/n_images": len(summaries),
        "examples": [
            {"record_id": r["record_id"], "label": r["label"], "answer": a[:200]}
            for r, a in list(zip(recs, answers, strict=True))[:3]
        ],
    }


def mission_gate(mission: str, base: dict, fused: dict, cfg, seed: int, metrics: Sequence[str] = GATED_METRICS) -> dict:
    """{mission, passed, rows: [{metric, n, base, fused, delta, low, high, ok}], failures}; cfg = EvalGateConfig."""
    rows, failures = [], []
    for m in metrics:
        b, f = base["items"][m], fused["items"][m]
        if not b:
            rows.append(
                {
                    "metric": m,
                    "n": 0,
                    "base": None,
                    "fused": None,
                    "delta": None,
                    "low": None,
                    "high": None,
                    "ok": False,
                }
            )
            failures.append(f"{m}: no held-out items")
            continue
        boot = paired_group_bootstrap(b, f, cfg.n_bootstrap, seed)
        delta, (low, high) = boot.estimate, boot.interval(cfg.confidence)
        # A tiny epsilon so that equal scores computed in different orders never fail the gate.
        ok = high >= cfg.min_improvement - 1e-9
        rows.append(
            {
                "metric": m,
                "n": len(b),
                "base": base[m],
                "fused": fused[m],
                "delta": delta,
                "low": low,
                "high": high,
                "ok": ok,
            }
        )
        if not ok:
            failures.append(f"{m}: interval [{low:+.3f}, {high:+.3f}] below {cfg.min_improvement:+.3f}")
    return {"mission": mission, "passed": not failures, "rows": rows, "failures": failures}


def gate_table(gates: Sequence[dict]) -> str:
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    return md_table(
        ["mission", "metric", "n", "base", "student", "delta", "interval", "ok"],
        [
            (
                g["mission"],
                r["metric"],
                r["n"],
                num(r["base"], ".3f"),
                num(r["fused"], ".3f"),
                num(r["delta"], "+.3f"),
                "-" if r["low"] is None else f"[{r['low']:+.3f}, {r['high']:+.3f}]",
                "yes" if r["ok"] else "NO",
            )
            for g in gates
            for r in g["rows"]
        ],
    )
