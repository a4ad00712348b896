"""Rollouts: every group under a guidance, over a decode grid x samples, with paired seeds.

Seeds depend only on the run seed, the grid setting and the sample index, never on the guidance,
so a candidate guidance is rolled out with exactly the seeds its baseline used (paired comparison),
and a candidate accepted in one round is the next round's baseline without new calls.

Every finished completion is appended to `trajectories.jsonl` as it arrives, keyed by (model
fingerprint, guidance hash, record id, decode setting, seed). A re-run or a resume after a crash
reads that file and only asks the model for what is missing. Failed requests are logged but not
cached, so a resume retries them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qc_assets.stage_b.aggregate import GroupOutcome, outcome_from_votes
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_messages
from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX, parse_verdict
from resources.llm import ChatLLM, DecodeParams
from resources.store import append_jsonl, iter_jsonl


@dataclass
class CallCounter:
    rollout_calls: int = 0  # completions generated for verdicts (cache hits excluded)
    reflection_calls: int = 0
    chat_requests: int = 0  # llm.chat invocations (batches)
    cached: int = 0  # completions served from trajectories.jsonl / reflections.jsonl
    failed_rollout_calls: int = 0  # provider failures (the request failed; the row is logged with its error)
    failed_reflection_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # HTTP attempts beyond the first (the backend's own retries on timeouts, 429, 5xx): a slow teacher
    # shows here before it shows as failed calls
    retries: int = 0

    def count_attempts(self, completion) -> None:
        self.retries += max(int(completion.extra.get("attempts", 1)) - 1, 0)

    @property
    def llm_calls(self) -> int:
        return self.rollout_calls + self.reflection_calls

    @property
    def failed_calls(self) -> int:
        return self.failed_rollout_calls + self.failed_reflection_calls

    @property
    def failed_call_rate(self) -> float:
        return self.failed_calls / self.llm_calls if self.llm_calls else 0.0

    def snapshot(self) -> dict:
        return {
            "llm_calls": self.llm_calls,
            "rollout_calls": self.rollout_calls,
            "reflection_calls": self.reflection_calls,
            "chat_requests": self.chat_requests,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "failed_calls": self.failed_calls,
            "failed_rollout_calls": self.failed_rollout_calls,
            "failed_reflection_calls": self.failed_reflection_calls,
            "retries": self.retries,
        }


class ProviderFailureError(RuntimeError):
    """Too many of a run's LLM calls failed: an outage must never read as "converged, kept v0"."""

    def __init__(self, counts: dict, max_rate: float, where: str) -> None:
        rate = counts["failed_calls"] / counts["llm_calls"] if counts["llm_calls"] else 0.0
        super().__init__(
            f"{counts['failed_calls']} of {counts['llm_calls']} LLM calls failed in this run ({rate:.1%}, "
            f"{counts['failed_rollout_calls']} rollouts, {counts['failed_reflection_calls']} reflections) during "
            f"{where}; max_provider_failure_rate={max_rate}. Check the LLM server, then re-run: finished calls "
            "are cached and only the failed ones are retried"
        )
        self.counts = counts
        self.rate = rate


def check_provider_failures(counter: CallCounter, max_rate: float, where: str) -> None:
    if counter.failed_call_rate > max_rate:
        raise ProviderFailureError(counter.snapshot(), max_rate, where)


@dataclass(frozen=True)
class PlanEntry:
    temperature: float
    top_p: float
    sample: int
    seed: int


def derive_seed(run_seed: int, *parts) -> int:
    digest = hashlib.sha256("|".join(map(str, (run_seed, *parts))).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def rollout_plan(grid: Sequence[tuple[float, float]], samples: int, seed: int) -> list[PlanEntry]:
    """One entry per (setting, sample); a greedy setting gets one sample (more would repeat it)."""
    plan = []
    for si, (temperature, top_p) in enumerate(grid):
        for k in range(1 if temperature == 0 else samples):
            plan.append(PlanEntry(float(temperature), float(top_p), k, derive_seed(seed, "rollout", si, k)))
    return plan


@dataclass
class RolloutEngine:
    llm: ChatLLM
    mission: object
    out_dir: Path
    plan: list[PlanEntry]
    max_new_tokens: int
    constrained: bool
    run_id: str
    batch_size: int = 8
    counter: CallCounter = field(default_factory=CallCounter)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.path = Path(self.out_dir) / "trajectories.jsonl"
        self._cache: dict[tuple, dict] = {}
        self._failed: dict[tuple, dict] = {}  # this run's failed requests: voted as invalid, not cached
        for row in iter_jsonl(self.path):
            if row.get("error") is None and row.get("key"):
                self._cache[tuple(row["key"])] = row

    @property
    def regex(self) -> str | None:
        return VERDICT_REGEX if self.constrained else None

    def key(self, guidance: Guidance, record_id: str, entry: PlanEntry) -> tuple:
        return (
            self.llm.fingerprint,
            guidance.content_hash(),
            record_id,
            entry.temperature,
            entry.top_p,
            self.max_new_tokens,
            entry.seed,
            self.regex or "",
        )

    def rollout(self, guidance: Guidance, records: Sequence[dict], *, epoch: int, phase: str) -> dict[str, list[dict]]:
        """Rows per record id in plan order, generating only the ones not cached."""
        for entry in self.plan:
            pending = [r for r in records if self.key(guidance, r["record_id"], entry) not in self._cache]
            self.counter.cached += len(records) - len(pending)
            for start in range(0, len(pending), self.batch_size):
                self._generate(guidance, pending[start : start + self.batch_size], entry, epoch, phase)
                self.log(
                    f"{phase} rollouts, guidance v{guidance.version}, T={entry.temperature} "
                    f"seed {entry.seed}: {min(start + self.batch_size, len(pending))}/{len(pending)} generated, "
                    f"{len(records) - len(pending)} cached"
                )
        out: dict[str, list[dict]] = {}
        for rec in records:
            rows = []
            for entry in self.plan:
                row = self._cache.get(self.key(guidance, rec["record_id"], entry))
                if row is None:
                    row = self._failed.get(self.key(guidance, rec["record_id"], entry))
                rows.append(row)
            out[rec["record_id"]] = rows
        return out

    def _generate(self, guidance: Guidance, batch: list[dict], entry: PlanEntry, epoch: int, phase: str) -> None:
        params = DecodeParams(
            temperature=entry.temperature,
            top_p=entry.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=entry.seed,
            n=1,
            constraint=VERDICT_CONSTRAINT if self.constrained else None,
        )
        conversations = [build_messages(self.mission, guidance, rec) for rec in batch]
        results = self.llm.chat(conversations, params)
        if len(results) != len(batch) or any(len(r) != 1 for r in results):
            raise ValueError(
                f"llm.chat returned {[len(r) for r in results]} completions for {len(batch)} conversations with n=1"
            )
        self.counter.chat_requests += 1
        rows = []
        for rec, (completion,) in zip(batch, results, strict=True):
            parsed = parse_verdict(completion.text) if completion.ok else parse_verdict(None)
            key = self.key(guidance, rec["record_id"], entry)
            row = {
                "key": list(key),
                "run_id": self.run_id,
                "epoch": epoch,
                "phase": phase,
                "mission": self.mission.name,
                "guidance_version": guidance.version,
                "guidance_hash": guidance.content_hash(),
                "record_id": rec["record_id"],
                "group_id": rec["group_id"],
                "label": rec["label"],
                "temperature": entry.temperature,
                "top_p": entry.top_p,
                "sample": entry.sample,
                "seed": entry.seed,
                "max_new_tokens": self.max_new_tokens,
                "regex": self.regex,
                "model": self.llm.fingerprint,
                "raw": completion.text,
                "verdict": parsed.verdict,
                "reason": parsed.reason,
                "format_ok": parsed.format_ok,
                "correct": parsed.verdict == rec["label"],
                "error": completion.error,
                "finish_reason": completion.finish_reason,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "latency_s": completion.latency_s,
                "attempts": completion.extra.get("attempts", 1),
            }
            self.counter.rollout_calls += 1
            self.counter.count_attempts(completion)
            self.counter.prompt_tokens += completion.prompt_tokens
            self.counter.completion_tokens += completion.completion_tokens
            rows.append(row)
            if completion.ok:
                self._cache[tuple(key)] = row
            else:
                self.counter.failed_rollout_calls += 1
                self._failed[tuple(key)] = row
        append_jsonl(self.path, rows)


def outcomes_from_rows(records: Sequence[dict], rows: dict[str, list[dict]]) -> list[GroupOutcome]:
    return [outcome_from_votes(rec, [r["verdict"] for r in rows[rec["record_id"]]]) for rec in records]


def selected_row(outcome: GroupOutcome, rows: list[dict]) -> dict | None:
    """The first candidate (plan order) that voted with the majority."""
    return next((r for r in rows if outcome.predicted is not None and r["verdict"] == outcome.predicted), None)


def format_ok_rate(rows: dict[str, list[dict]]) -> float:
    flat = [r for rs in rows.values() for r in rs]
    return sum(bool(r["format_ok"]) for r in flat) / len(flat) if flat else 0.0
