"""Run the teacher: every group under the kept guidance, `n_samples` answers each, resumable.

Sample i of every group uses `sample_seed(config.seed, i)`, so answers do not depend on which groups
were still pending. Every answer is appended to `teacher_answers.jsonl` as its batch finishes, keyed
by (teacher fingerprint, guidance version and hash, record id, prompt hash, sample, decode params).
A re-run reads that log and asks the teacher only for what is missing: a finished run re-runs with
zero teacher calls. A failed request is logged with its error but not cached, so a re-run retries it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qc_assets.distill.config import DistillConfig
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_messages, prompt_hash
from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX
from resources.llm import ChatLLM, DecodeParams
from resources.store import append_jsonl, iter_jsonl

ANSWERS_FILE = "teacher_answers.jsonl"


def sample_seed(base_seed: int, sample: int) -> int:
    digest = hashlib.sha256(f"{base_seed}|distill|{sample}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class TeacherRun:
    answers: list[dict]  # one row per (record, sample), records in input order, samples ascending
    teacher_calls: int  # completions generated in this run (cache hits excluded)
    cached: int
    failed: int  # failed requests in this run (text None, error set)
    chat_requests: int
    prompt_tokens: int
    completion_tokens: int


class TeacherRunner:
    def __init__(
        self,
        llm: ChatLLM,
        mission,
        guidance: Guidance,
        config: DistillConfig,
        out_dir: str | Path,
        log: Callable[[str], None] = print,
    ) -> None:
        if guidance.mission != mission.name:
            raise ValueError(f"guidance is for mission {guidance.mission!r}, not {mission.name!r}")
        self.llm = llm
        self.mission = mission
        self.guidance = guidance
        self.config = config
        self.log = log
        self.path = Path(out_dir) / ANSWERS_FILE
        self.constraint = VERDICT_CONSTRAINT if config.constrained else None
        self.regex = VERDICT_REGEX if config.constrained else None  # names the constraint in keys and rows
        self._cache: dict[tuple, dict] = {}
        for row in iter_jsonl(self.path):
            if row.get("error") is None and row.get("raw") is not None and row.get("key"):
                self._cache[tuple(row["key"])] = row

    def params(self, sample: int) -> DecodeParams:
        c = self.config
        return DecodeParams(
            temperature=c.temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
            seed=sample_seed(c.seed, sample),
            n=1,
            constraint=self.constraint,
        )

    def key(self, record: dict, messages: list[dict], sample: int) -> tuple:
        p = self.params(sample)
        return (
            self.llm.fingerprint,
            self.guidance.version,
            self.guidance.content_hash(),
            record["record_id"],
            prompt_hash(messages),
            sample,
            p.temperature,
            p.top_p,
            p.max_new_tokens,
            p.seed,
            self.regex or "",
        )

    def run(self, records: Sequence[dict]) -> TeacherRun:
        ids = [r["record_id"] for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError(f"record ids must be unique, got {len(ids) - len(set(ids))} duplicates")
        messages = {r["record_id"]: build_messages(self.mission, self.guidance, r) for r in records}
        failed: dict[tuple, dict] = {}
        stats = {"calls": 0, "cached": 0, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for sample in range(self.config.n_samples):
            pending = [r for r in records if self.key(r, messages[r["record_id"]], sample) not in self._cache]
            stats["cached"] += len(records) - len(pending)
            for start in range(0, len(pending), self.config.batch_size):
                batch = pending[start : start + self.config.batch_size]
                rows = self._ask(batch, messages, sample)
                stats["requests"] += 1
                for row in rows:
                    stats["calls"] += 1
                    stats["prompt_tokens"] += row["prompt_tokens"]
                    stats["completion_tokens"] += row["completion_tokens"]
                    target = self._cache if row["error"] is None else failed
                    target[tuple(row["key"])] = row
            if pending:
                self.log(
                    f"distill teacher: sample {sample}: {len(pending)} asked, {len(records) - len(pending)} cached"
                )
        answers = []
        for rec in records:
            for sample in range(self.config.n_samples):
                key = self.key(rec, messages[rec["record_id"]], sample)
                answers.append(self._cache.get(key) or failed[key])
        return TeacherRun(
            answers=answers,
            teacher_calls=stats["calls"],
            cached=stats["cached"],
            failed=len(failed),
            chat_requests=stats["requests"],
            prompt_tokens=stats["prompt_tokens"],
            completion_tokens=stats["completion_tokens"],
        )

    def _ask(self, batch: list[dict], messages: dict[str, list[dict]], sample: int) -> list[dict]:
        params = self.params(sample)
        results = self.llm.chat([messages[r["record_id"]] for r in batch], params)
        if len(results) != len(batch) or any(len(r) != 1 for r in results):
            raise ValueError(
                f"llm.chat returned {[len(r) for r in results]} completions for {len(batch)} conversations with n=1"
            )
        now = datetime.now(UTC).isoformat()
        rows = []
        for rec, (completion,) in zip(batch, results, strict=True):
            ok = completion.ok
            rows.append(
                {
                    "key": list(self.key(rec, messages[rec["record_id"]], sample)),
                    "mission": self.mission.name,
                    "guidance_version": self.guidance.version,
                    "guidance_hash": self.guidance.content_hash(),
                    "record_id": rec["record_id"],
                    "group_id": rec["group_id"],
                    "label": rec["label"],
                    "sample": sample,
                    "seed": params.seed,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "max_new_tokens": params.max_new_tokens,
                    "regex": self.regex,
                    "teacher": self.llm.fingerprint,
                    "prompt_hash": prompt_hash(messages[rec["record_id"]]),
                    # A failed request keeps text None even if the backend returned a partial string.
                    "raw": completion.text if ok else None,
                    "error": None if ok else (completion.error or "completion has no text"),
                    "finish_reason": completion.finish_reason,
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "latency_s": completion.latency_s,
                    "created_at": now,
                }
            )
        append_jsonl(self.path, rows)
        return rows


def run_teacher(
    llm: ChatLLM,
    mission,
    guidance: Guidance,
    records: Sequence[dict],
    config: DistillConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
) -> TeacherRun:
    return TeacherRunner(llm, mission, guidance, config, out_dir, log).run(records)
