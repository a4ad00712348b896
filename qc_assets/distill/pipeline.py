"""Distillation after Stage-B convergence: teacher answers -> label filter -> chatml corpus.

Runs once on the kept guidance version, never inside the learning loop (the earlier system
distilled inside the loop and exported candidates without checking them against the label).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qc_assets.distill.config import DistillConfig
from qc_assets.distill.export import chatml_rows, pair_rows, rejected_rows, write_outputs
from qc_assets.distill.select import (
    hard_records,
    judge_answers,
    majority_wrong_records,
    preference_pairs,
    reason_counts,
)
from qc_assets.distill.sources import SourceChoice
from qc_assets.distill.teacher import ANSWERS_FILE, TeacherRun, run_teacher
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.prompts import build_messages
from resources.llm import ChatLLM
from resources.store import atomic_write_json, atomic_write_jsonl

REQUIRED = ("record_id", "group_id", "mission", "label", "per_image", "image_sha256")
SELECTED_FILE = "selected_answers.jsonl"
TEACHER_SOURCE = SourceChoice("teacher", "source: teacher", None)


@dataclass(frozen=True)
class DistillResult:
    mission: str
    guidance_version: int
    guidance_hash: str
    teacher: str
    n_groups: int
    n_answers: int
    kept_answers: int
    rejected: dict[str, int]
    rows: list[dict]
    n_pairs: int
    hard_groups: int
    majority_wrong_groups: int
    teacher_run: TeacherRun
    paths: dict[str, Path]
    source: SourceChoice = TEACHER_SOURCE
    teacher_calls_saved: int = 0  # calls a teacher pass (n_samples per group) would have made
    held_out_records: int = 0  # Stage-B test records, never exported

    @property
    def keep_rate(self) -> float:
        return self.kept_answers / self.n_answers if self.n_answers else 0.0

    @property
    def label_counts(self) -> dict[str, int]:
        counts = Counter(r["label"] for r in self.rows)
        return {"pass": counts.get("pass", 0), "fail": counts.get("fail", 0)}

    def summary(self) -> dict:
        t = self.teacher_run
        return {
            "mission": self.mission,
            "guidance_version": self.guidance_version,
            "guidance_hash": self.guidance_hash,
            "teacher": self.teacher,
            "groups": self.n_groups,
            "answers": self.n_answers,
            "kept_answers": self.kept_answers,
            "keep_rate": self.keep_rate,
            "rows": len(self.rows),
            "label_counts": self.label_counts,
            "rejected": self.rejected,
            "preference_pairs": self.n_pairs,
            "hard_groups": self.hard_groups,
            "majority_wrong_groups": self.majority_wrong_groups,
            "teacher_calls": t.teacher_calls,
            "cached": t.cached,
            "failed": t.failed,
            "chat_requests": t.chat_requests,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "paths": {k: str(v) for k, v in self.paths.items()},
            "source": self.source.source,
            "source_reason": self.source.reason,
            "stage_b_model": self.source.stage_b_model,
            "teacher_calls_saved": self.teacher_calls_saved,
            "held_out_records": self.held_out_records,
        }


def validate_records(records: Sequence[dict], mission_name: str) -> list[dict]:
    if not records:
        raise ValueError(f"no Stage-A records for mission {mission_name!r}")
    for i, rec in enumerate(records):
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise ValueError(f"Stage-A record #{i} lacks {missing}; expected fields {list(REQUIRED)}")
        if rec["label"] not in ("pass", "fail"):
            raise ValueError(f"record {rec['record_id']!r}: label must be 'pass' or 'fail', got {rec['label']!r}")
        if rec["mission"] != mission_name:
            raise ValueError(f"record {rec['record_id']!r} is for mission {rec['mission']!r}, not {mission_name!r}")
    return sorted(records, key=lambda r: r["record_id"])


def run_distill(
    records: Sequence[dict],
    mission,
    guidance: Guidance,
    llm: ChatLLM,
    config: DistillConfig,
    out_dir: str | Path,
    trajectory_rows: Iterable[dict] = (),
    log: Callable[[str], None] = print,
    *,
    source: SourceChoice = TEACHER_SOURCE,
    selected: Sequence[dict] = (),
    held_out: set[str] | frozenset[str] = frozenset(),
) -> DistillResult:
    """Take the answers (Stage-B's `selected` candidates, or a teacher pass), filter them against the
    labels, write the corpus. `held_out` are the Stage-B test record ids: never asked about, never
    exported. `trajectory_rows` are Stage-B's rollouts, used only to find groups its majority got wrong."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_records = validate_records(records, mission.name)
    records = [r for r in all_records if r["record_id"] not in held_out]
    by_id = {r["record_id"]: r for r in records}
    prompts = {rid: build_messages(mission, guidance, rec) for rid, rec in by_id.items()}
    if source.source == "selections":
        leaked = sorted({a["record_id"] for a in selected} - set(by_id))
        if leaked:
            raise ValueError(f"{len(leaked)} selected answers are for held-out or unknown records, e.g. {leaked[0]!r}")
        run = TeacherRun(
            answers=list(selected),
            teacher_calls=0,
            cached=0,
            failed=0,
            chat_requests=0,
            prompt_tokens=0,
            completion_tokens=0,
        )
        answers_path = atomic_write_jsonl(out_dir / SELECTED_FILE, list(selected))
        # one row per group, as seed 000 asks: the teacher pass this replaces would ask n_samples per group
        saved = len(selected) * config.n_samples
    else:
        run = run_teacher(llm, mission, guidance, records, config, out_dir, log)
        answers_path, saved = out_dir / ANSWERS_FILE, 0
    judged = judge_answers(run.answers, config, {rid: list(rec["per_image"].values()) for rid, rec in by_id.items()})
    wrong = majority_wrong_records(trajectory_rows, guidance.content_hash()) & set(by_id)
    hard = hard_records(records, wrong, config)
    teacher = llm.fingerprint
    rows = chatml_rows(judged, by_id, prompts, guidance, teacher, hard, hard_case_factor=1)
    pairs = pair_rows(preference_pairs(judged), by_id, prompts, guidance, teacher) if config.preference_pairs else []
    paths = write_outputs(out_dir, rows, pairs, rejected_rows(judged))
    paths["answers"] = answers_path
    result = DistillResult(
        mission=mission.name,
        guidance_version=guidance.version,
        guidance_hash=guidance.content_hash(),
        teacher=teacher,
        n_groups=len(records),
        n_answers=len(judged),
        kept_answers=sum(j.kept for j in judged),
        rejected=reason_counts(judged),
        rows=rows,
        n_pairs=len(pairs),
        hard_groups=len(hard),
        majority_wrong_groups=len(wrong),
        teacher_run=run,
        paths=paths,
        source=source,
        teacher_calls_saved=saved,
        held_out_records=len(all_records) - len(records),
    )
    paths["summary"] = atomic_write_json(out_dir / "summary.json", {**result.summary(), "config": config.to_dict()})
    log(
        f"distill {mission.name} ({source.source}: {source.reason}): kept {result.kept_answers}/{result.n_answers} "
        f"answers (keep rate {result.keep_rate:.3f}), {len(rows)} rows, {len(pairs)} preference pairs, "
        f"{run.teacher_calls} new teacher calls, {saved} saved"
    )
    return result
