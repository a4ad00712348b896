"""The Stage-B learning loop: prompt-space training of guidance rules, no weight updates.

Per epoch: roll out the train and eval pools under the current guidance, then run reflection rounds
that each accept at most one gated, non-vetoed edit. An epoch that accepts nothing means convergence.
The version kept is the best by eval accuracy (then train accuracy, then the earlier version), not
the last one.

Re-running on the same out_dir replays the run from the logs: rollouts and reflection answers that
are already on disk are reused, so a crashed run resumes without redoing finished work and a
finished run re-runs with zero new model calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.guidance import Guidance, GuidanceStore
from qc_assets.stage_b.rollout import RolloutEngine, rollout_plan
from qc_assets.stage_b.rounds import LoopContext, PoolState, evaluate, reflection_round, write_selections
from qc_assets.stage_b.runstate import ReflectionCache, RunState
from qc_assets.stage_b.split import split_groups
from resources.llm import ChatLLM
from resources.store import append_jsonl, atomic_write_json

__all__ = ["StageBLoopConfig", "StageBResult", "run_stage_b", "validate_records"]


@dataclass(frozen=True)
class StageBResult:
    run_id: str
    mission: str
    kept_guidance: Guidance
    current_version: int
    epochs: list[dict]  # the per-epoch metrics rows, as written to metrics.jsonl
    version_stats: dict[int, dict]
    counts: dict  # llm_calls, rollout_calls, reflection_calls, cached, prompt/completion tokens
    converged: bool
    stopped_at_max_epochs: bool
    accepted_edits: int
    rejected_edits: int
    n_train_records: int
    n_eval_records: int
    resumed: bool
    out_dir: Path

    @property
    def kept_version(self) -> int:
        return self.kept_guidance.version

    @property
    def baseline_eval_accuracy(self) -> float:
        return self.version_stats[0]["eval_accuracy"]

    @property
    def kept_eval_accuracy(self) -> float:
        return self.version_stats[self.kept_version]["eval_accuracy"]

    @property
    def llm_calls(self) -> int:
        return self.counts["llm_calls"]

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id, "mission": self.mission, "kept_version": self.kept_version,
            "current_version": self.current_version, "converged": self.converged,
            "stopped_at_max_epochs": self.stopped_at_max_epochs, "epochs_run": len(self.epochs),
            "accepted_edits": self.accepted_edits, "rejected_edits": self.rejected_edits,
            "baseline_eval_accuracy": self.baseline_eval_accuracy, "kept_eval_accuracy": self.kept_eval_accuracy,
            "version_stats": {str(k): v for k, v in sorted(self.version_stats.items())},
            "counts": self.counts, "n_train_records": self.n_train_records,
            "n_eval_records": self.n_eval_records, "resumed": self.resumed,
            "kept_guidance": self.kept_guidance.to_dict(),
        }


def validate_records(records: Sequence[dict], mission_name: str) -> list[dict]:
    if not records:
        raise ValueError(f"no Stage-A records for mission {mission_name!r}")
    out = []
    for i, rec in enumerate(records):
        missing = {"record_id", "group_id", "label", "per_image"} - set(rec)
        if missing:
            raise ValueError(f"record #{i} lacks {sorted(missing)}")
        if rec["label"] not in ("pass", "fail"):
            raise ValueError(f"record {rec['record_id']!r}: label must be 'pass' or 'fail', got {rec['label']!r}")
        if rec.get("mission", mission_name) != mission_name:
            raise ValueError(f"record {rec['record_id']!r} is for mission {rec['mission']!r}, not {mission_name!r}")
        out.append(rec)
    return sorted(out, key=lambda r: r["record_id"])


def _best_version(stats: dict[int, dict]) -> int:
    return max(stats, key=lambda v: (stats[v]["eval_accuracy"], stats[v]["train_accuracy"], -v))


def run_stage_b(records: Sequence[dict], mission, llm: ChatLLM, config: StageBLoopConfig, out_dir: str | Path,
                log: Callable[[str], None] = print) -> StageBResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = validate_records(records, mission.name)
    state_file, resumed = RunState.start(out_dir, config.to_dict())
    run_id = state_file.run_id
    log(f"stage_b {mission.name}: {'resuming' if resumed else 'starting'} {run_id} in {out_dir}")
    train, held = split_groups(records, config.eval_fraction, config.seed)
    append_jsonl(out_dir / "splits.jsonl", [{"run_id": run_id, "seed": config.seed,
                                             "train": [r["record_id"] for r in train],
                                             "eval": [r["record_id"] for r in held]}])
    engine = RolloutEngine(llm=llm, mission=mission, out_dir=out_dir,
                           plan=rollout_plan(config.decode_grid, config.samples, config.seed),
                           max_new_tokens=config.max_new_tokens, constrained=config.constrained,
                           run_id=run_id, batch_size=config.rollout_batch_size, log=log)
    store = GuidanceStore(out_dir / "guidance")
    ctx = LoopContext(mission=mission, config=config, engine=engine,
                      reflector=ReflectionCache(llm, out_dir, engine.counter, run_id), store=store,
                      out_dir=out_dir, run_id=run_id, log=log, records={r["record_id"]: r for r in records},
                      train=train, held=held)
    initial = store.commit(Guidance.initial(mission), parent=None, change=None)
    store.set_pointer("current", initial.version)
    version_stats: dict[int, dict] = {}
    metrics: list[dict] = []
    totals: Counter = Counter()
    converged = False
    current: Guidance = initial
    for epoch in range(1, config.epochs + 1):
        state_file.update(epoch=epoch, phase="rollout", current_version=current.version)
        before = engine.counter.snapshot()
        version_start = current.version
        pool: PoolState = evaluate(ctx, current, epoch)
        version_stats[current.version] = pool.stats()
        write_selections(ctx, pool, epoch)
        start = pool.stats()
        log(f"epoch {epoch}: v{current.version} train acc {start['train_accuracy']:.3f} "
            f"eval acc {start['eval_accuracy']:.3f} format ok {start['train_format_ok_rate']:.3f}")
        decisions: Counter = Counter()
        for rnd in range(config.rounds_per_epoch):
            state_file.update(phase=f"reflection round {rnd}")
            result = reflection_round(ctx, pool, epoch, rnd)
            decisions.update(result.decisions)
            if result.new_state is not None:
                pool = result.new_state
                current = pool.guidance
                version_stats[current.version] = pool.stats()
        totals.update(decisions)
        after = engine.counter.snapshot()
        end = pool.stats()
        row = {
            "run_id": run_id, "epoch": epoch, "version_start": version_start,
            "version_end": current.version, **start,
            **{f"end_{k}": v for k, v in end.items()},
            "accepted": decisions["accepted"], "rejected": decisions["rejected"], "vetoed": decisions["vetoed"],
            "filtered": decisions["filtered"], "invalid_json": decisions["invalid_json"],
            **{k: after[k] - before[k] for k in after},
            "cumulative_llm_calls": after["llm_calls"],
            "llm_calls_per_accepted_edit": (after["llm_calls"] / totals["accepted"]) if totals["accepted"] else None,
        }
        metrics.append(row)
        append_jsonl(out_dir / "metrics.jsonl", [row])
        if decisions["accepted"] == 0:
            converged = True
            log(f"epoch {epoch}: no edit accepted, converged")
            break
    best = _best_version(version_stats)
    store.set_pointer("current", current.version)
    store.set_pointer("best", best, **version_stats[best])
    result = StageBResult(
        run_id=run_id, mission=mission.name, kept_guidance=store.load(best), current_version=current.version,
        epochs=metrics, version_stats=version_stats, counts=engine.counter.snapshot(), converged=converged,
        stopped_at_max_epochs=not converged, accepted_edits=totals["accepted"],
        rejected_edits=totals["rejected"] + totals["vetoed"], n_train_records=len(train),
        n_eval_records=len(held), resumed=resumed, out_dir=out_dir,
    )
    summary = result.to_dict()
    append_jsonl(out_dir / "results.jsonl", [summary])
    atomic_write_json(out_dir / "result.json", summary)
    state_file.finish(kept_version=best, current_version=current.version)
    log(f"stage_b {mission.name}: kept v{best} (eval acc {result.kept_eval_accuracy:.3f} vs baseline "
        f"{result.baseline_eval_accuracy:.3f}), {result.llm_calls} new LLM calls")
    return result
