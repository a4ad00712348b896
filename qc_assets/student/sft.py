"""One fusion run: one student for every mission. Load and mix every mission's sources, train through
the student backend, evaluate student vs base per mission, write `runs/<run_id>/`, promote on pass.

Layout under `out_root` (the asset's folder):
- `runs/<run_id>/`: the merged checkpoint at the top (config.json, safetensors, processor, chat
  template: loads with `TransformersVLM` and `vllm serve`), `adapter/`, `eval.json`,
  `fusion_report.json`, `train_log.jsonl`, `loss.png`. Written under `runs/.staging-<run_id>` and
  renamed when complete, so a crash leaves no half run.
- `current`: a symlink to the last run whose gate passed, swapped atomically; a failed run stays
  under `runs/` for inspection and never moves it. `promotions.jsonl` lists every decision.
- A request whose inputs (config, student model, mixed rows, photo stamps, held-out records and
  guidance) match the latest run's `inputs_key` reuses that run: training is seeded, so it would
  only redo finished work.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qc_assets.plots import new_axes, png_bytes
from qc_assets.student.config import FusionConfig
from qc_assets.student.mixing import SourceReport, mix
from qc_assets.student.runs import EVAL_FILE, RUNS_DIR, evaluate_session, in_staging, mission_plan, new_run, publish
from qc_assets.student.sources import discover_missions, load_source
from resources.store import append_jsonl, atomic_write_bytes, atomic_write_json, inputs_hash, read_jsonl

CURRENT = "current"
PROMOTIONS = "promotions.jsonl"
ADAPTER_DIR = "adapter"
REPORT_FILE = "fusion_report.json"
TRAIN_LOG = "train_log.jsonl"
LOSS_PLOT = "loss.png"


class NoTrainingData(ValueError):
    """Every configured source is empty: there is nothing to fine-tune on."""


@dataclass
class FusionResult:
    run_id: str
    run_dir: Path
    missions: list[str]
    rows: int
    sources: list[SourceReport]
    losses: list[float]
    trainable_params: int
    total_params: int
    adapter_bytes: int
    targets: list[str]
    eval: dict
    empty_sources: list[str]
    guidance: dict[str, str]
    train_seconds: float
    promoted: bool
    current_run: str | None
    inputs_key: str = ""
    reused: bool = False  # the latest run had the same inputs: returned as it was, nothing retrained


def plot_loss(losses: list[float], path: Path, title: str) -> Path:
    fig, ax = new_axes()
    ax.plot(range(1, len(losses) + 1), losses, marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return atomic_write_bytes(path, png_bytes(fig))


def current_run(out_root: Path) -> str | None:
    link = Path(out_root) / CURRENT
    return os.readlink(link).split("/")[-1] if link.is_symlink() else None


def promote(out_root: Path, run_id: str) -> None:
    """Point `current` at runs/<run_id> with an atomic symlink swap (relative, so the tree can move)."""
    tmp = Path(out_root) / f".{CURRENT}-{run_id}"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{RUNS_DIR}/{run_id}", tmp)
    os.replace(tmp, Path(out_root) / CURRENT)


def _load_sources(cfg: FusionConfig, plan: dict, data_root: Path, images_root: Path, log) -> None:
    """Each mission's sources, its held-out groups excluded, into plan[mission]["loaded"]."""
    for name, p in plan.items():
        p["loaded"] = [
            load_source(s, mission=name, data_root=data_root, images_root=images_root, exclude_groups=p["held_groups"])
            for s in cfg.sources
            if s.type != "chatml_file"
        ]
        for s in p["loaded"]:
            if s.note:
                log(f"fusion source {s.config.name}/{name}: {s.note}")


def _mix(cfg: FusionConfig, plan: dict, data_root: Path, images_root: Path):
    """Pools keyed `<source>/<mission>` weighted source ratio x normalised mission weight; files once."""
    weights = {m: float(cfg.missions.get(m, 1.0)) for m in plan}
    total_w = sum(weights.values())
    pools, ratios, types, notes, once = {}, {}, {}, {}, set()
    for m, p in plan.items():
        for s in p["loaded"]:
            key = f"{s.config.name}/{m}"
            pools[key], ratios[key] = s.examples, s.config.ratio * weights[m] / total_w
            types[key], notes[key] = s.config.type, s.note
            if s.config.sample_without_replacement:
                once.add(key)
    for src in cfg.sources:
        if src.type == "chatml_file":
            s = load_source(src, mission="", data_root=data_root, images_root=images_root, exclude_groups=set())
            pools[src.name], ratios[src.name], types[src.name], notes[src.name] = (
                s.examples,
                src.ratio,
                src.type,
                s.note,
            )
            if src.sample_without_replacement:
                once.add(src.name)
    if not any(pools.values()):
        raise NoTrainingData(
            "every fusion source is empty for missions "
            + str(sorted(plan))
            + " ("
            + "; ".join(f"{k}: {v or 'empty'}" for k, v in notes.items())
            + ")"
        )
    mixed, reports = mix(pools, ratios, cfg.total_rows, cfg.seed, types=types, notes=notes, without_replacement=once)
    return mixed, reports, [k for k, v in pools.items() if not v]


def run_fusion(
    cfg: FusionConfig,
    student,
    *,
    data_root: Path,
    images_root: Path,
    out_root: Path,
    missions: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> FusionResult:
    """Train one student on every mission's data (`missions`: default = every mission on disk)."""
    data_root, out_root = Path(data_root), Path(out_root)
    missions = sorted(missions) if missions is not None else discover_missions(data_root)
    if not missions:
        raise NoTrainingData(f"no mission has Stage-A records or distill rows under {data_root}")
    unknown = sorted(set(cfg.missions) - set(missions))
    if unknown:
        raise ValueError(
            f"fusion config weighs missions {unknown} that have no data under {data_root}; "
            f"missions with data: {missions}"
        )
    plan = mission_plan(data_root, missions, cfg.seed, cfg.guidance)
    _load_sources(cfg, plan, data_root, images_root, log)
    mixed, reports, empty = _mix(cfg, plan, data_root, images_root)

    key = inputs_key(cfg, getattr(student, "fingerprint", ""), plan, mixed)
    previous = reusable_run(out_root, key)
    if previous is not None:
        log(f"fusion run {previous.run_id}: same inputs as this request (inputs_key {key}), reused, nothing retrained")
        return previous

    run_id, staging = new_run(out_root)
    result = in_staging(
        staging,
        lambda: _train_and_evaluate(cfg, student, plan, mixed, reports, empty, images_root, staging, run_id, key, log),
    )
    run_dir = publish(staging, run_id)
    passed = result["eval"]["passed"]
    if passed:
        promote(out_root, run_id)
    append_jsonl(
        out_root / PROMOTIONS,
        [
            {
                "run_id": run_id,
                "promoted": passed,
                "current": current_run(out_root),
                "failures": result["eval"]["failures"],
                "inputs_key": key,
                "at": time.time(),
            }
        ],
    )
    log(f"fusion run {run_id}: gate {'passed, promoted to current' if passed else 'FAILED, current unchanged'}")
    return FusionResult(
        run_id=run_id,
        run_dir=run_dir,
        missions=missions,
        rows=len(mixed),
        sources=reports,
        empty_sources=empty,
        promoted=passed,
        current_run=current_run(out_root),
        inputs_key=key,
        **result,
    )


def inputs_key(cfg: FusionConfig, student_fingerprint: str, plan: dict, mixed: list[dict]) -> str:
    """Everything a run's model and gate depend on. Photos count by path, size and mtime (not bytes),
    so the key stays cheap at a million photos."""
    photos = sorted({path for ex in mixed for path in ex["images"]})
    stamps = [(p, *_stamp(p)) for p in photos]
    held = {
        m: {"records": p["held"], "guidance": p["guidance"].content_hash(), "how": p["guidance_source"]}
        for m, p in sorted(plan.items())
    }
    payload = {"config": cfg.to_dict(), "student": student_fingerprint, "rows": mixed, "photos": stamps, "held": held}
    return inputs_hash(payload)


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def reusable_run(out_root: Path, key: str) -> FusionResult | None:
    """The latest run, as it was, when it had these inputs and its folder is complete; else None."""
    log = read_jsonl(Path(out_root) / PROMOTIONS)
    if not log or log[-1].get("inputs_key") != key:
        return None
    run_id = log[-1]["run_id"]
    run_dir = Path(out_root) / RUNS_DIR / run_id
    if not (run_dir / REPORT_FILE).is_file() or not (run_dir / EVAL_FILE).is_file():
        return None
    report = json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8"))
    return FusionResult(
        run_id=run_id,
        run_dir=run_dir,
        missions=report["missions"],
        rows=report["rows"],
        sources=[SourceReport(**r) for r in report["sources"]],
        losses=report["losses"],
        trainable_params=report["trainable_params"],
        total_params=report["total_params"],
        adapter_bytes=report["adapter_bytes"],
        targets=report["lora_targets"],
        eval=json.loads((run_dir / EVAL_FILE).read_text(encoding="utf-8")),
        empty_sources=report["empty_sources"],
        guidance=report["guidance"],
        train_seconds=report["train_seconds"],
        promoted=log[-1]["promoted"],
        current_run=current_run(out_root),
        inputs_key=key,
        reused=True,
    )


def _train_and_evaluate(
    cfg, student, plan, mixed, reports, empty, images_root, staging: Path, run_id: str, key: str, log
) -> dict:
    session = student.sft(mixed, cfg.lora, staging, log=log)
    eval_doc = {"run_id": run_id, **evaluate_session(session, plan, cfg.eval, images_root, cfg.seed)}
    adapter_bytes = session.save_adapter(staging / ADAPTER_DIR)
    session.save_merged(staging)
    report = {
        "run_id": run_id,
        "missions": sorted(plan),
        "config": cfg.to_dict(),
        "rows": len(mixed),
        "sources": [asdict(r) for r in reports],
        "empty_sources": empty,
        "dropped": {f"{s.config.name}/{m}": s.dropped for m, p in plan.items() for s in p["loaded"] if s.dropped},
        "lora_targets": session.targets,
        "trainable_params": session.trainable_params,
        "total_params": session.total_params,
        **session.extra,
        "adapter_bytes": adapter_bytes,
        "base_model_path": session.base_path,
        "student_note": getattr(student, "note", ""),
        "train_seconds": session.seconds,
        "first_loss": session.losses[0],
        "final_loss": session.losses[-1],
        "losses": session.losses,
        "guidance": {m: p["guidance_source"] for m, p in plan.items()},
        "inputs_key": key,
    }
    atomic_write_json(staging / REPORT_FILE, report)
    plot_loss(session.losses, staging / LOSS_PLOT, f"LoRA SFT loss, run {run_id}")
    atomic_write_json(staging / EVAL_FILE, eval_doc)
    return dict(
        losses=session.losses,
        trainable_params=session.trainable_params,
        total_params=session.total_params,
        adapter_bytes=adapter_bytes,
        targets=session.targets,
        eval=eval_doc,
        guidance={m: p["guidance_source"] for m, p in plan.items()},
        train_seconds=session.seconds,
    )
