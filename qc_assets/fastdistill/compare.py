"""Run comparison (seed 001 "记录与追踪"): lineage, recipe, metrics, keep rate and exec pass rate of
several FastDistill runs side by side, as markdown and a bar plot.

`python -m qc_assets.fastdistill.compare RUN_A RUN_B ... [--data-root data] [--out DIR]` writes
`compare_<runs>.md` and `compare_<runs>.png` (default folder `<data_root>/fastdistill/compare/`).
A run without a trained student shows `n/a (no student)` in the student columns: its absence is
reported, never filled with a number.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qc_assets.fastdistill.pipeline import RUN_CONFIG
from qc_assets.markdown import md_table
from qc_assets.plots import new_axes, png_bytes
from resources.store import atomic_write_bytes, atomic_write_text, data_root

NO_STUDENT = "n/a (no student)"
COLUMNS = [
    "run",
    "recipe",
    "n",
    "temperature",
    "max_per_input",
    "teacher_from_run",
    "teacher",
    "kept",
    "keep_rate",
    "exec_pass_rate",
    "gold_match_rate",
    "preference_pairs",
    "teacher_tokens_per_sec",
    "kept_per_hour",
    "student_before_gold_match",
    "student_after_gold_match",
    "student_after_exec_pass",
]
PLOTTED = ("keep_rate", "exec_pass_rate", "gold_match_rate", "student_after_gold_match")


def _json(path: Path, run_id: str, what: str) -> dict:
    if not path.is_file():
        raise ValueError(f"run {run_id!r}: {path} missing ({what}); materialize fastdistill_dataset for it first")
    return json.loads(path.read_text(encoding="utf-8"))


def run_row(run_dir: Path) -> dict:
    """One run's comparison row from its folder."""
    run_id = run_dir.name
    if not run_dir.is_dir():
        raise ValueError(f"run {run_id!r}: no folder {run_dir}")
    cfg = _json(run_dir / RUN_CONFIG, run_id, "run config")["config"]
    quality = _json(run_dir / "reports" / "quality_report.json", run_id, "final quality report")
    metrics = _json(run_dir / "reports" / "metrics.json", run_id, "run metrics")
    lineage = _json(run_dir / "reports" / "lineage.json", run_id, "lineage")
    pairs_path = run_dir / "export" / "preference_pairs.jsonl"
    pairs = (
        sum(1 for line in pairs_path.read_text(encoding="utf-8").splitlines() if line.strip())
        if pairs_path.is_file()
        else 0
    )
    eval_path = run_dir / "eval" / "eval_report.json"
    ev = json.loads(eval_path.read_text(encoding="utf-8")) if eval_path.is_file() else None
    return {
        "run": run_id,
        "recipe": cfg["recipe"],
        "n": cfg["n"],
        "temperature": cfg["temperature"],
        "max_per_input": cfg["max_per_input"],
        "teacher_from_run": cfg["teacher_from_run"] or "-",
        "teacher": lineage.get("teacher_fingerprint"),
        "kept": quality["kept"],
        "keep_rate": quality["p_keep"],
        "exec_pass_rate": quality["exec_pass_rate"],
        "gold_match_rate": quality["gold_match_rate"],
        "preference_pairs": pairs,
        "teacher_tokens_per_sec": metrics["teacher_tokens_per_sec"],
        "kept_per_hour": metrics["pipeline_kept_samples_per_hour"],
        "student_before_gold_match": ev["before"]["gold_match_rate"] if ev else NO_STUDENT,
        "student_after_gold_match": ev["after"]["gold_match_rate"] if ev else NO_STUDENT,
        "student_after_exec_pass": ev["after"]["exec_pass_rate"] if ev else NO_STUDENT,
    }


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    lines = [
        "# FastDistill run comparison",
        "",
        md_table(COLUMNS, [[_cell(r[c]) for c in COLUMNS] for r in rows]),
        "",
        "Lineage: "
        + "; ".join(
            f"`{r['run']}` taught by "
            + (f"run `{r['teacher_from_run']}`'s student" if r["teacher_from_run"] != "-" else f"`{r['teacher']}`")
            for r in rows
        ),
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict]) -> bytes:
    fig, ax = new_axes((max(6.0, 1.6 * len(rows) * len(PLOTTED) / 2), 3.5))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        values = [r[k] if isinstance(r[k], (int, float)) else 0.0 for k in PLOTTED]
        ax.bar([j + i * width for j in range(len(PLOTTED))], values, width, label=r["run"])
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(PLOTTED))], PLOTTED, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("FastDistill runs (a run with no student shows 0 for its student bar)")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def compare_runs(run_ids: list[str], fastdistill_root: Path, out_dir: Path | None = None) -> dict[str, Path]:
    if len(run_ids) < 2:
        raise ValueError(f"compare needs at least two run ids, got {run_ids}")
    rows = [run_row(Path(fastdistill_root) / run_id) for run_id in run_ids]
    out_dir = Path(out_dir) if out_dir else Path(fastdistill_root) / "compare"
    stem = "compare_" + "_".join(run_ids)
    return {
        "markdown": atomic_write_text(out_dir / f"{stem}.md", markdown(rows)),
        "plot": atomic_write_bytes(out_dir / f"{stem}.png", plot(rows)),
    }


def main(argv: list[str] | None = None) -> dict[str, Path]:
    p = argparse.ArgumentParser(
        prog="python -m qc_assets.fastdistill.compare",
        description="Compare FastDistill runs side by side (markdown + plot).",
    )
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--data-root", default="", help="default: QC_DATA_ROOT (data)")
    p.add_argument("--out", default="", help="default: <data_root>/fastdistill/compare")
    args = p.parse_args(argv)
    root = Path(args.data_root) if args.data_root else data_root()
    paths = compare_runs(args.run_ids, root / "fastdistill", Path(args.out) if args.out else None)
    print(f"wrote {paths['markdown']} and {paths['plot']}")
    return paths


if __name__ == "__main__":
    main()
