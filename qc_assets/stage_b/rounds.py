"""One epoch's pieces: evaluate a guidance on the train and selection pools, and one reflection round
(propose from train cases -> filter -> gate on selection -> selection veto -> commit at most one edit).

Reflection sees only train; the gate, the veto and (in loop.py) the choice of the kept version see
only selection; test is never touched here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from qc_assets.stage_b.aggregate import GroupOutcome, accuracy, false_release_rate
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.filters import filter_ops
from qc_assets.stage_b.gate import GateResult, choose_edit, eval_veto, gate, gate_still_possible
from qc_assets.stage_b.guidance import Guidance, GuidanceStore, RuleOp
from qc_assets.stage_b.prompts import build_reflection_messages
from qc_assets.stage_b.reflection import REFLECTION_JSON_SCHEMA, parse_operations, select_cases
from qc_assets.stage_b.rollout import RolloutEngine, derive_seed, format_ok_rate, outcomes_from_rows, selected_row
from qc_assets.stage_b.runstate import ReflectionCache
from resources.llm import DecodeParams
from resources.store import append_jsonl

MAX_REJECTED_SHOWN = 8


@dataclass
class LoopContext:
    mission: object
    config: StageBLoopConfig
    engine: RolloutEngine
    reflector: ReflectionCache
    store: GuidanceStore
    out_dir: Path
    run_id: str
    log: Callable[[str], None]
    records: dict[str, dict]
    train: list[dict]
    selection: list[dict]
    rejected: set[str] = field(default_factory=set)  # signatures of edits the gate or veto refused
    rejected_texts: list[str] = field(default_factory=list)

    def remember_rejected(self, op: RuleOp) -> None:
        self.rejected.add(op.signature())
        self.rejected_texts.append(f"{op.op} {','.join(op.ids)} {op.text or ''}".strip())


@dataclass
class PoolState:
    guidance: Guidance
    train_rows: dict[str, list[dict]]
    train_out: list[GroupOutcome]
    selection_rows: dict[str, list[dict]]
    selection_out: list[GroupOutcome]

    def stats(self) -> dict:
        return {
            "train_accuracy": accuracy(self.train_out),
            "selection_accuracy": accuracy(self.selection_out),
            "train_format_ok_rate": format_ok_rate(self.train_rows),
            "selection_format_ok_rate": format_ok_rate(self.selection_rows),
            "train_false_release_rate": false_release_rate(self.train_out),
            "selection_false_release_rate": false_release_rate(self.selection_out),
        }


def evaluate(ctx: LoopContext, guidance: Guidance, epoch: int) -> PoolState:
    train_rows = ctx.engine.rollout(guidance, ctx.train, epoch=epoch, phase="train")
    selection_rows = ctx.engine.rollout(guidance, ctx.selection, epoch=epoch, phase="selection")
    return PoolState(
        guidance,
        train_rows,
        outcomes_from_rows(ctx.train, train_rows),
        selection_rows,
        outcomes_from_rows(ctx.selection, selection_rows),
    )


def write_selections(ctx: LoopContext, state: PoolState, epoch: int) -> None:
    write_pool_selections(
        ctx,
        state.guidance,
        epoch,
        (("train", state.train_out, state.train_rows), ("selection", state.selection_out, state.selection_rows)),
    )


def write_pool_selections(ctx: LoopContext, guidance: Guidance, epoch: int, pools) -> None:
    """`pools`: (pool name, outcomes, rows by record id) triples."""
    rows = []
    for pool, outcomes, all_rows in pools:
        for o in outcomes:
            chosen = selected_row(o, all_rows[o.record_id])
            rows.append(
                {
                    "run_id": ctx.run_id,
                    "epoch": epoch,
                    "pool": pool,
                    "guidance_version": guidance.version,
                    "record_id": o.record_id,
                    "group_id": o.group_id,
                    "label": o.label,
                    "predicted": o.predicted,
                    "correct": o.correct,
                    "agreement": o.agreement,
                    "votes": {"pass": o.n_pass, "fail": o.n_fail, "invalid": o.n_invalid},
                    "selected": None
                    if chosen is None
                    else {
                        k: chosen[k]
                        for k in (
                            "raw",
                            "verdict",
                            "reason",
                            "temperature",
                            "top_p",
                            "seed",
                            "sample",
                            "max_new_tokens",
                            "regex",
                            "model",
                            "finish_reason",
                        )
                    },
                }
            )
    append_jsonl(ctx.out_dir / "selections.jsonl", rows)


@dataclass
class RoundResult:
    new_state: PoolState | None
    decisions: Counter


def _row(ctx: LoopContext, epoch: int, rnd: int, parent: Guidance, **fields) -> dict:
    return {
        "run_id": ctx.run_id,
        "epoch": epoch,
        "round": rnd,
        "parent_version": parent.version,
        "parent_hash": parent.content_hash(),
        **fields,
    }


def _gate_candidate(
    ctx: LoopContext, state: PoolState, cand: Guidance, epoch: int, seed: int
) -> tuple[GateResult, dict[str, list[dict]], bool]:
    """Roll the candidate out on the selection pool (chunked, stopping once it cannot pass) and gate it
    against the baseline outcomes the round already has: the baseline is never re-run. The gate does
    not look at train, the pool the reflector wrote the edit from."""
    pool = ctx.selection
    size = ctx.config.gate_chunk_size or len(pool) or 1
    rows: dict[str, list[dict]] = {}
    seen: list[dict] = []
    thresholds = ctx.config.thresholds
    for start in range(0, len(pool), size):
        chunk = pool[start : start + size]
        rows.update(ctx.engine.rollout(cand, chunk, epoch=epoch, phase="gate"))
        seen += chunk
        if len(seen) < len(pool) and not gate_still_possible(
            state.selection_out, outcomes_from_rows(seen, rows), thresholds
        ):
            base = {o.record_id: o for o in state.selection_out}
            partial = gate([base[r["record_id"]] for r in seen], outcomes_from_rows(seen, rows), thresholds, seed)
            return (
                replace(partial, accepted=False, reasons=("stopped early: cannot pass the gate", *partial.reasons)),
                rows,
                True,
            )
    return gate(state.selection_out, outcomes_from_rows(pool, rows), thresholds, seed), rows, False


def reflection_round(ctx: LoopContext, state: PoolState, epoch: int, rnd: int) -> RoundResult:
    cfg = ctx.config
    decisions: Counter = Counter()
    parent = state.guidance
    rules_path = ctx.out_dir / "rule_candidates.jsonl"
    reasons = {}
    for o in state.train_out:
        chosen = selected_row(o, state.train_rows[o.record_id])
        reasons[o.record_id] = chosen["reason"] if chosen else None
    cases = select_cases(
        state.train_out,
        ctx.records,
        reasons,
        cfg.reflection_batch_size,
        offset=(epoch - 1) * cfg.rounds_per_epoch + rnd,
        train_ids=frozenset(r["record_id"] for r in ctx.train),
    )
    if not cases or all(c["correct"] and c["agreement"] == 1.0 for c in cases):
        ctx.log(f"epoch {epoch} round {rnd}: no wrong or mixed train groups, nothing to reflect on")
        decisions["nothing_to_reflect"] += 1
        return RoundResult(None, decisions)
    messages = build_reflection_messages(
        ctx.mission, parent, cases, ctx.rejected_texts[-MAX_REJECTED_SHOWN:], label_hint=cfg.label_hint
    )
    params = DecodeParams(
        temperature=cfg.reflection_temperature,
        top_p=0.95,
        max_new_tokens=cfg.reflection_max_new_tokens,
        seed=derive_seed(cfg.seed, "reflect", epoch, rnd),
        json_schema=REFLECTION_JSON_SCHEMA if cfg.reflection_json_schema else None,
    )
    reply = ctx.reflector.ask(messages, params, epoch=epoch, round=rnd)
    parsed = parse_operations(reply["raw"] if reply.get("error") is None else None)
    case_groups = sorted({c["group_id"] for c in cases if not c["correct"]})
    if parsed.error:
        ctx.log(f"epoch {epoch} round {rnd}: reflection unusable ({parsed.error})")
        append_jsonl(
            rules_path,
            [
                _row(
                    ctx,
                    epoch,
                    rnd,
                    parent,
                    decision="invalid_json",
                    error=parsed.error,
                    raw=reply.get("raw"),
                    cases=[c["record_id"] for c in cases],
                )
            ],
        )
        decisions["invalid_json"] += 1
        return RoundResult(None, decisions)
    summaries = [text for c in cases for _, text in c["summaries"]]
    to_gate: list[tuple[int, RuleOp]] = []
    rows = [_row(ctx, epoch, rnd, parent, decision="invalid_op", error=e) for e in parsed.op_errors]
    decisions["invalid_op"] += len(parsed.op_errors)
    for idx, (op, why) in enumerate(filter_ops(parsed.ops, parent, summaries, ctx.rejected)):
        if why is None and len(to_gate) < cfg.max_candidates_per_round:
            to_gate.append((idx, op))
            continue
        decision = "filtered" if why else "skipped"
        rows.append(
            _row(
                ctx,
                epoch,
                rnd,
                parent,
                candidate=idx,
                op=op.to_dict(),
                decision=decision,
                reason=why or f"over max_candidates_per_round={cfg.max_candidates_per_round}",
            )
        )
        decisions[decision] += 1
    append_jsonl(rules_path, rows)

    passed = []
    for idx, op in to_gate:
        before = ctx.engine.counter.rollout_calls
        cand = replace(parent.apply(op, epoch=epoch, groups=case_groups), version=-1)
        gate_seed = derive_seed(cfg.seed, "gate", epoch, rnd, idx)
        result, cand_rows, early = _gate_candidate(ctx, state, cand, epoch, gate_seed)
        spent = ctx.engine.counter.rollout_calls - before
        ctx.log(
            f"epoch {epoch} round {rnd}: {op.op} {op.ids} {op.text!r} -> gate "
            f"{'accept' if result.accepted else 'reject'} {list(result.reasons)}"
        )
        if result.accepted:
            passed.append((idx, op, cand, result, cand_rows, spent))
        else:
            ctx.remember_rejected(op)
            append_jsonl(
                rules_path,
                [
                    _row(
                        ctx,
                        epoch,
                        rnd,
                        parent,
                        candidate=idx,
                        op=op.to_dict(),
                        decision="rejected",
                        gate=result.to_dict(),
                        early_stop=early,
                        rollout_calls=spent,
                        candidate_hash=cand.content_hash(),
                    )
                ],
            )
            decisions["rejected"] += 1
    passed.sort(key=lambda p: (-p[3].relative_error_reduction, p[3].changed_fraction, p[0]))
    eval_runs: dict[int, tuple[dict, list, int]] = {}

    def veto_of(item):
        idx, _, cand, _, _, _ = item
        before = ctx.engine.counter.rollout_calls
        rows = ctx.engine.rollout(cand, ctx.selection, epoch=epoch, phase="veto")  # cached by the gate
        outs = outcomes_from_rows(ctx.selection, rows)
        eval_runs[idx] = (rows, outs, ctx.engine.counter.rollout_calls - before)
        return eval_veto(state.selection_out, outs, cfg.thresholds)

    _, outcomes = choose_edit(passed, veto_of)
    new_state = None
    for (idx, op, cand, result, cand_rows, spent), decision, veto in outcomes:
        spent += eval_runs.get(idx, (None, None, 0))[2]
        common = dict(
            candidate=idx,
            op=op.to_dict(),
            gate=result.to_dict(),
            candidate_hash=cand.content_hash(),
            rollout_calls=spent,
            decision=decision,
            veto=None if veto is None else veto.to_dict(),
        )
        decisions[decision] += 1
        if decision == "vetoed":
            ctx.log(f"epoch {epoch} round {rnd}: eval veto {list(veto.reasons)}")
            ctx.remember_rejected(op)
        if decision != "accepted":
            append_jsonl(rules_path, [_row(ctx, epoch, rnd, parent, **common)])
            continue
        committed = ctx.store.commit(
            parent.apply(op, epoch=epoch, groups=case_groups, hits=result.fixed, misses=result.broken),
            parent=parent.version,
            change={**op.to_dict(), "run_id": ctx.run_id, "epoch": epoch, "round": rnd},
            stats={"gate": result.to_dict(), "veto": veto.to_dict()},
        )
        ctx.store.set_pointer("current", committed.version)
        append_jsonl(rules_path, [_row(ctx, epoch, rnd, parent, new_version=committed.version, **common)])
        ctx.log(f"epoch {epoch} round {rnd}: accepted -> guidance v{committed.version}")
        # The next round reflects on train cases under the new version: roll it out on train now.
        train_rows = ctx.engine.rollout(committed, ctx.train, epoch=epoch, phase="train")
        new_state = PoolState(
            committed,
            train_rows,
            outcomes_from_rows(ctx.train, train_rows),
            cand_rows,
            outcomes_from_rows(ctx.selection, cand_rows),
        )
    return RoundResult(new_state, decisions)
