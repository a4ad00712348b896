"""Judge inbox groups under the kept guidance: k samples per group, majority vote, never a silent pass.

Sampling follows Stage-B exactly: the same prompt (`build_messages`), the same plan and paired seeds
(`rollout_plan`), the same parser (`parse_verdict`) and vote (`majority`, fail wins ties).

Every finished sample is appended (fsynced) to `samples.jsonl`, keyed by the model fingerprint, the
guidance hash, the record id, the images' sha256, the decode setting and the seed. A re-run reads
that file and asks the model only for what is missing, so a group is never judged twice under the
same guidance, model and plan. Failed requests are logged but not cached: the group is marked for
review now, and the next run asks again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qc_assets.stage_b.aggregate import majority
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_messages
from qc_assets.stage_b.rollout import PlanEntry, rollout_plan
from qc_assets.stage_b.verdict import VERDICT_CONSTRAINT, VERDICT_REGEX, parse_verdict
from qc_assets.verdicts.config import VerdictConfig
from resources.llm import ChatLLM, DecodeParams
from resources.store import append_jsonl, iter_jsonl


def truncation_reason(record: dict) -> str:
    """Why a group whose Stage-A summary was cut at max_new_tokens goes to review: the verdict read
    a summary that stops mid-sentence, so what the photo showed after the cut was never judged."""
    keys = ", ".join(record["truncated_keys"][:5])
    return (
        f"Stage-A summary truncated at max_new_tokens for {record['truncated_images']}/"
        f"{len(record['per_image'])} photos ({keys})"
    )


def images_digest(image_sha256s: Sequence[str]) -> str:
    return hashlib.sha256("|".join(image_sha256s).encode()).hexdigest()[:16]


@dataclass
class JudgeCounts:
    llm_calls: int = 0  # completions generated now (cache hits excluded)
    cached: int = 0  # completions served from samples.jsonl
    failed: int = 0  # completions whose request failed (not cached)


class VerdictJudge:
    def __init__(
        self,
        llm: ChatLLM,
        mission,
        guidance: Guidance,
        config: VerdictConfig,
        out_dir: Path,
        log: Callable[[str], None] = print,
    ):
        self.llm, self.mission, self.guidance, self.config, self.log = llm, mission, guidance, config, log
        self.plan = rollout_plan(config.decode_grid, config.samples, config.seed)
        self.constraint = VERDICT_CONSTRAINT if config.constrained else None
        self.regex = VERDICT_REGEX if config.constrained else None  # names the constraint in keys
        self.path = Path(out_dir) / "samples.jsonl"
        self.counts = JudgeCounts()
        self._cache: dict[str, dict] = {}
        self._failed: dict[str, dict] = {}
        for row in iter_jsonl(self.path):
            if row.get("error") is None:
                self._cache[row["key"]] = row

    @property
    def plan_hash(self) -> str:
        """What the decode plan is, so a changed plan re-judges and says so."""
        plan = [[e.temperature, e.top_p, e.seed] for e in self.plan]
        return hashlib.sha256(json.dumps([plan, self.config.max_new_tokens, self.regex or ""]).encode()).hexdigest()[
            :12
        ]

    def key(self, record: dict, entry: PlanEntry) -> str:
        return json.dumps(
            [
                self.llm.fingerprint,
                self.guidance.content_hash(),
                record["record_id"],
                images_digest(record["image_sha256"]),
                entry.temperature,
                entry.top_p,
                self.config.max_new_tokens,
                entry.seed,
                self.regex or "",
            ],
            ensure_ascii=False,
        )

    def judge(self, records: Sequence[dict]) -> list[dict]:
        """One verdict row per record, generating only the samples that are not cached."""
        size = self.config.batch_size
        for entry in self.plan:
            pending = [r for r in records if self.key(r, entry) not in self._cache]
            self.counts.cached += len(records) - len(pending)
            for start in range(0, len(pending), size):
                self._generate(pending[start : start + size], entry)
            if pending:
                self.log(
                    f"verdicts, guidance v{self.guidance.version}, T={entry.temperature} seed {entry.seed}: "
                    f"{len(pending)} generated, {len(records) - len(pending)} cached"
                )
        return [self._row(r) for r in records]

    def _generate(self, batch: list[dict], entry: PlanEntry) -> None:
        params = DecodeParams(
            temperature=entry.temperature,
            top_p=entry.top_p,
            max_new_tokens=self.config.max_new_tokens,
            seed=entry.seed,
            n=1,
            constraint=self.constraint,
        )
        results = self.llm.chat([build_messages(self.mission, self.guidance, r) for r in batch], params)
        if len(results) != len(batch) or any(len(r) != 1 for r in results):
            raise ValueError(
                f"llm.chat returned {[len(r) for r in results]} completions for {len(batch)} conversations with n=1"
            )
        rows = []
        for rec, (completion,) in zip(batch, results, strict=True):
            parsed = parse_verdict(completion.text if completion.ok else None)
            row = {
                "key": self.key(rec, entry),
                "record_id": rec["record_id"],
                "group_id": rec["group_id"],
                "temperature": entry.temperature,
                "top_p": entry.top_p,
                "seed": entry.seed,
                "raw": completion.text,
                "verdict": parsed.verdict,
                "reason": parsed.reason,
                "format_ok": parsed.format_ok,
                "error": completion.error,
                "finish_reason": completion.finish_reason,
                "created_at": time.time(),
            }
            rows.append(row)
            self.counts.llm_calls += 1
            if completion.ok:
                self._cache[row["key"]] = row
            else:
                self.counts.failed += 1
                self._failed[row["key"]] = row
        append_jsonl(self.path, rows)

    def _row(self, record: dict) -> dict:
        samples = [self._cache.get(k) or self._failed[k] for k in (self.key(record, e) for e in self.plan)]
        failed = [s for s in samples if s["error"] is not None]
        answered = [s for s in samples if s["error"] is None]
        broken = [s for s in answered if not s["format_ok"]]
        vote = majority([s["verdict"] for s in answered])
        agreeing = [s for s in answered if vote.predicted is not None and s["verdict"] == vote.predicted]
        # share of all k samples that agree with the verdict: a broken or failed sample never agrees
        agreement = len(agreeing) / len(samples)
        problems = []
        if failed:
            problems.append(f"provider failed for {len(failed)}/{len(samples)} samples: {failed[0]['error'][:120]}")
        if broken:
            problems.append(f"{len(broken)}/{len(answered)} answers break the verdict contract")
        if vote.predicted is not None and agreement < self.config.min_agreement:
            problems.append(f"agreement {agreement:.2f} below {self.config.min_agreement}")
        if record["truncated_images"]:
            problems.append(truncation_reason(record))
        return {
            **self.row_base(record),
            "verdict": vote.predicted,
            "reason": agreeing[0]["reason"] if agreeing else None,
            "agreement": round(agreement, 4),
            "format_ok": bool(answered) and not broken,
            "needs_review": bool(problems) or vote.predicted is None,
            "review_reason": "; ".join(problems) or None,
            "n_samples": len(samples),
            "n_pass": vote.n_pass,
            "n_fail": vote.n_fail,
            "n_invalid": len(broken),
            "n_failed": len(failed),
            "judged_at": min(s["created_at"] for s in samples),
        }

    def row_base(self, record: dict) -> dict:
        return {
            "group_id": record["group_id"],
            "mission": self.mission.name,
            "guidance_version": self.guidance.version,
            "guidance_hash": self.guidance.content_hash(),
            "model_fingerprint": self.llm.fingerprint,
            "decode_plan": self.plan_hash,
            "verdict_model": self.config.verdict_model,
            "record_id": record["record_id"],
            "image_sha256s": list(record["image_sha256"]),
            "status": "pending",
            "reviewer_label": None,
            "agrees_with_reviewer": None,
            "reviewed_at": None,
        }

    def unjudgeable_row(self, record_id: str, group_id: str, why: str) -> dict:
        """An inbox group Stage-A could not summarise (no usable photo): listed for review, not judged."""
        base = self.row_base({"group_id": group_id, "record_id": record_id, "image_sha256": []})
        return {
            **base,
            "verdict": None,
            "reason": None,
            "agreement": 0.0,
            "format_ok": False,
            "needs_review": True,
            "review_reason": why,
            "n_samples": 0,
            "n_pass": 0,
            "n_fail": 0,
            "n_invalid": 0,
            "n_failed": 0,
            "judged_at": time.time(),
        }
