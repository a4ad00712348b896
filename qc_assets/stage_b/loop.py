"""The Stage-B learning loop: prompt-space training of guidance rules, no weight updates.

Groups are split three ways (split.py). Per epoch: roll out the train and selection pools under the
current guidance, then run reflection rounds that each accept at most one edit (proposed from train
cases, gated and vetoed on selection). The version kept is the best by selection accuracy (then train
accuracy, then the earlier version), not the last one. Only then is test read, once: baseline vs kept
with a paired bootstrap interval (testeval.py).

How the loop stopped is recorded as `stop_reason`: `converged` (an epoch evaluated valid candidates
and accepted none), `max_epochs` (still accepting edits), `no_usable_candidate` (an epoch whose
reflections gave nothing to gate: invalid JSON or every edit filtered) or `nothing_to_reflect` (no
wrong or mixed train group left). Only `converged` is convergence. A run whose LLM calls failed above
`max_provider_failure_rate` raises `ProviderFailureError` instead of reporting any of these.

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
from qc_assets.stage_b.rollout import (
    ProviderFailureError,
    RolloutEngine,
    check_provider_failures,
    derive_seed,
    outcomes_from_rows,
    rollout_plan,
)
from qc_assets.stage_b.rounds import (
    LoopContext,
    PoolState,
    evaluate,
    reflection_round,
    write_pool_selections,
    write_selections,
)
from qc_assets.stage_b.runstate import ReflectionCache, RunState
from qc_assets.stage_b.split import Split, previous_sides, split_three_way, sticky_three_way
from qc_assets.stage_b.testeval import compare_on_test
from resources.llm import ChatLLM
from resources.store import append_jsonl, atomic_write_json, read_jsonl

__all__ = ["ProviderFailureError", "StageBLoopConfig", "StageBResult", "run_stage_b", "validate_records"]

STOP_REASONS = ("converged", "max_epochs", "no_usable_candidate", "nothing_to_reflect")
GATED = ("accepted", "rejected", "vetoed", "not_chosen")


@dataclass(frozen=True)
class StageBResult:
    run_id: str
    mission: str
    kept_guidance: Guidance
    baseline_version: int  # the initial guidance (G0 + scaffold) of this mission text; not always v0
    current_version: int
    epochs: list[dict]  # the per-epoch metrics rows, as written to metrics.jsonl
    version_stats: dict[int, dict]
    counts: dict  # llm_calls, rollout_calls, reflection_calls, failed_calls, cached, tokens
    stop_reason: str
    accepted_edits: int
    rejected_edits: int
    gated_candidates: int
    split_sizes: dict  # records and groups per side
    test: dict  # compare_on_test(...)
    resumed: bool
    out_dir: Path

    @property
    def kept_version(self) -> int:
        return self.kept_guidance.version

    @property
    def converged(self) -> bool:
        return self.stop_reason == "converged"

    @property
    def stopped_at_max_epochs(self) -> bool:
        return self.stop_reason == "max_epochs"

    @property
    def baseline_selection_accuracy(self) -> float:
        return self.version_stats[self.baseline_version]["selection_accuracy"]

    @property
    def kept_selection_accuracy(self) -> float:
        return self.version_stats[self.kept_version]["selection_accuracy"]

    @property
    def llm_calls(self) -> int:
        return self.counts["llm_calls"]

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "mission": self.mission,
            "kept_version": self.kept_version,
            "baseline_version": self.baseline_version,
            "current_version": self.current_version,
            "stop_reason": self.stop_reason,
            "converged": self.converged,
            "stopped_at_max_epochs": self.stopped_at_max_epochs,
            "epochs_run": len(self.epochs),
            "accepted_edits": self.accepted_edits,
            "rejected_edits": self.rejected_edits,
            "gated_candidates": self.gated_candidates,
            "baseline_selection_accuracy": self.baseline_selection_accuracy,
            "kept_selection_accuracy": self.kept_selection_accuracy,
            "test": self.test,
            "version_stats": {str(k): v for k, v in sorted(self.version_stats.items())},
            "counts": self.counts,
            "split": self.split_sizes,
            "resumed": self.resumed,
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
    return max(stats, key=lambda v: (stats[v]["selection_accuracy"], stats[v]["train_accuracy"], -v))


def _epoch_stop_reason(decisions: Counter, rounds: int) -> str | None:
    """Why the loop stops after this epoch, or None to go on."""
    if decisions["accepted"]:
        return None
    if sum(decisions[k] for k in GATED):
        return "converged"
    return "nothing_to_reflect" if decisions["nothing_to_reflect"] == rounds else "no_usable_candidate"


def run_stage_b(
    records: Sequence[dict],
    mission,
    llm: ChatLLM,
    config: StageBLoopConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
) -> StageBResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = validate_records(records, mission.name)
    state_file, resumed = RunState.start(out_dir, config.to_dict())
    try:
        return _run(records, mission, llm, config, out_dir, log, state_file, resumed)
    except ProviderFailureError as e:
        state_file.fail(str(e), counts=e.counts)
        raise


def _run(
    records: list[dict],
    mission,
    llm: ChatLLM,
    config: StageBLoopConfig,
    out_dir: Path,
    log: Callable[[str], None],
    state_file: RunState,
    resumed: bool,
) -> StageBResult:
    run_id = state_file.run_id
    log(f"stage_b {mission.name}: {'resuming' if resumed else 'starting'} {run_id} in {out_dir}")
    store = GuidanceStore(out_dir / "guidance")
    split = _split(records, config, out_dir, run_id, store)
    # "eval" names the side no Stage-B decision saw (test), for readers of the older two-way file.
    append_jsonl(
        out_dir / "splits.jsonl",
        [{"run_id": run_id, "seed": config.seed, **split.to_dict(), "eval": split.to_dict()["test"]}],
    )
    split_sizes = {
        f"{side}_{unit}": (len(getattr(split, side)) if unit == "records" else split.group_count(side))
        for side in ("train", "selection", "test")
        for unit in ("records", "groups")
    }
    engine = RolloutEngine(
        llm=llm,
        mission=mission,
        out_dir=out_dir,
        plan=rollout_plan(config.decode_grid, config.samples, config.seed),
        max_new_tokens=config.max_new_tokens,
        constrained=config.constrained,
        run_id=run_id,
        batch_size=config.rollout_batch_size,
        log=log,
    )
    ctx = LoopContext(
        mission=mission,
        config=config,
        engine=engine,
        reflector=ReflectionCache(llm, out_dir, engine.counter, run_id),
        store=store,
        out_dir=out_dir,
        run_id=run_id,
        log=log,
        records={r["record_id"]: r for r in records},
        train=split.train,
        selection=split.selection,
    )
    if config.start_from == "kept":  # re-learning: the live guidance is both the start and the baseline
        initial = store.load(store.pointer("best"))
        log(f"stage_b {mission.name}: re-learning from the kept guidance v{initial.version}")
    else:  # edited focus or scaffold text gives a new initial guidance with a later version number
        initial = store.commit(Guidance.initial(mission), parent=None, change=None)
    store.set_pointer("current", initial.version)

    def guard(where: str) -> None:
        check_provider_failures(engine.counter, config.max_provider_failure_rate, where)

    version_stats: dict[int, dict] = {}
    metrics: list[dict] = []
    totals: Counter = Counter()
    stop_reason = "max_epochs"
    current: Guidance = initial
    for epoch in range(1, config.epochs + 1):
        state_file.update(epoch=epoch, phase="rollout", current_version=current.version)
        before = engine.counter.snapshot()
        version_start = current.version
        pool: PoolState = evaluate(ctx, current, epoch)
        guard(f"epoch {epoch} rollouts")
        version_stats[current.version] = pool.stats()
        write_selections(ctx, pool, epoch)
        start = pool.stats()
        log(
            f"epoch {epoch}: v{current.version} train acc {start['train_accuracy']:.3f} "
            f"selection acc {start['selection_accuracy']:.3f} format ok {start['train_format_ok_rate']:.3f}"
        )
        decisions: Counter = Counter()
        for rnd in range(config.rounds_per_epoch):
            state_file.update(phase=f"reflection round {rnd}")
            result = reflection_round(ctx, pool, epoch, rnd)
            guard(f"epoch {epoch} reflection round {rnd}")
            decisions.update(result.decisions)
            if result.new_state is not None:
                pool = result.new_state
                current = pool.guidance
                version_stats[current.version] = pool.stats()
        totals.update(decisions)
        after = engine.counter.snapshot()
        end = pool.stats()
        row = {
            "run_id": run_id,
            "epoch": epoch,
            "version_start": version_start,
            "version_end": current.version,
            **start,
            **{f"end_{k}": v for k, v in end.items()},
            "accepted": decisions["accepted"],
            "rejected": decisions["rejected"],
            "vetoed": decisions["vetoed"],
            "filtered": decisions["filtered"],
            "invalid_json": decisions["invalid_json"],
            "gated": sum(decisions[k] for k in GATED),
            **{k: after[k] - before[k] for k in after},
            "cumulative_llm_calls": after["llm_calls"],
            "llm_calls_per_accepted_edit": (after["llm_calls"] / totals["accepted"]) if totals["accepted"] else None,
        }
        metrics.append(row)
        append_jsonl(out_dir / "metrics.jsonl", [row])
        reason = _epoch_stop_reason(decisions, config.rounds_per_epoch)
        if reason is not None:
            stop_reason = reason
            log(f"epoch {epoch}: no edit accepted, stopping ({reason})")
            break
    best = _best_version(version_stats)
    kept = store.load(best)
    test = _read_test_once(ctx, split.test, initial, kept, len(metrics), config)
    guard("the test rollouts")
    if live_after_test(config, test) == "baseline":
        log(
            f"stage_b {mission.name}: v{best} is worse than the live v{initial.version} on test "
            f"(difference {test['difference']:+.3f}, interval [{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]); "
            f"v{initial.version} stays live"
        )
        test = {**test, "refused_version": best}
        best, kept = initial.version, initial
    store.set_pointer("current", current.version)
    store.set_pointer("best", best, **version_stats[best])
    result = StageBResult(
        run_id=run_id,
        mission=mission.name,
        kept_guidance=kept,
        baseline_version=initial.version,
        current_version=current.version,
        epochs=metrics,
        version_stats=version_stats,
        counts=engine.counter.snapshot(),
        stop_reason=stop_reason,
        accepted_edits=totals["accepted"],
        rejected_edits=totals["rejected"] + totals["vetoed"],
        gated_candidates=sum(totals[k] for k in GATED),
        split_sizes=split_sizes,
        test=test,
        resumed=resumed,
        out_dir=out_dir,
    )
    summary = result.to_dict()
    append_jsonl(out_dir / "results.jsonl", [summary])
    atomic_write_json(out_dir / "result.json", summary)
    state_file.finish(kept_version=best, current_version=current.version, stop_reason=stop_reason)
    log(
        f"stage_b {mission.name}: kept v{best} (selection acc {result.kept_selection_accuracy:.3f} vs baseline "
        f"{result.baseline_selection_accuracy:.3f}; test {test['verdict']}), stop: {stop_reason}, "
        f"{result.llm_calls} new LLM calls"
    )
    return result


def live_after_test(config: StageBLoopConfig, test: dict) -> str:
    """Which version a run leaves live: the one it kept, except when a re-learning's kept version is
    worse than the live one it started from on test (the whole interval below zero). The blocking check
    reads the same test and fails that run, so the worse version is never served."""
    worse = test["conclusive"] and test["ci_high"] < 0
    return "baseline" if config.start_from == "kept" and worse else "kept"


def _split(records: list[dict], config: StageBLoopConfig, out_dir: Path, run_id: str, store: GuidanceStore) -> Split:
    if config.start_from == "initial":
        return split_three_way(records, config.selection_fraction, config.test_fraction, config.seed)
    rows = read_jsonl(out_dir / "splits.jsonl")
    if store.pointer("best") is None or not rows:
        raise ValueError(
            f"start_from='kept' re-learns from a kept guidance, but {out_dir} has none yet: "
            "materialize stage_b_guidance once with start_from='initial'"
        )
    own = [r for r in rows if r["run_id"] == run_id]  # a resumed run keeps the split it started with
    previous = own[-1] if own else rows[-1]
    return sticky_three_way(
        records, previous_sides(previous, records), config.selection_fraction, config.test_fraction, config.seed
    )


def _read_test_once(
    ctx: LoopContext, test: list[dict], baseline: Guidance, kept: Guidance, epoch: int, config: StageBLoopConfig
) -> dict:
    """Baseline and kept guidance on the test side: the only place test records reach the model."""
    if not test:
        return {
            "n_groups": 0,
            "n_records": 0,
            "min_groups": config.min_test_groups,
            "conclusive": False,
            "verdict": "inconclusive",
            "baseline_version": baseline.version,
            "kept_version": kept.version,
            "note": "no test groups (test_fraction=0 or too few groups): nothing to compare",
        }
    outs, pools = {}, []
    for name, guidance in (("baseline", baseline), ("kept", kept)):
        rows = ctx.engine.rollout(guidance, test, epoch=epoch, phase="test")
        outs[name] = outcomes_from_rows(test, rows)
        pools.append((f"test_{name}", outs[name], rows))
    write_pool_selections(ctx, kept, epoch, pools[1:] if kept.version == baseline.version else pools)
    return compare_on_test(
        outs["baseline"],
        outs["kept"],
        baseline_version=baseline.version,
        kept_version=kept.version,
        min_groups=config.min_test_groups,
        samples=config.bootstrap_samples,
        seed=derive_seed(config.seed, "test"),
        level=config.test_interval_level,
    )
