"""Judge teacher answers against the label, pick hard cases, and pair answers for DPO.

An answer is kept only if its request succeeded, it obeys the verdict contract, its verdict equals
the group's label, and (short-rationale recipe) its reason fits the budget. The earlier system
exported candidates without this check. Every other answer gets exactly one rejection reason, in
this order of precedence:

- `no_selection` (source: selections): no well-formed Stage-B candidate carried the group's majority.
- `teacher_error`: the request failed (text None); never parsed or scored.
- `format_bad`: the text breaks the two-line verdict contract.
- `copies_summary`: well formed, but the reason copies one of the group's Stage-A summaries (the
  contract lets a reason cite 图片_i, never copy; `reason_copies_summary` holds the threshold).
- `label_mismatch`: well formed, but the verdict disagrees with the label.
- `reason_too_long`: right verdict, rationale longer than `max_reason_chars`.
- `truncated`: the teacher hit its token limit, so the rationale may be cut mid-sentence.
- `duplicate_answer`: the same answer as an earlier kept sample of the same group.
- `not_selected`: a further accepted sample when `multi_sample` is off (one answer per group).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qc_assets.distill.config import DistillConfig
from qc_assets.stage_b.aggregate import majority
from qc_assets.stage_b.filters import reason_copies_summary
from qc_assets.stage_b.verdict import format_verdict, parse_verdict

REJECT_REASONS = (
    "no_selection",
    "teacher_error",
    "format_bad",
    "copies_summary",
    "label_mismatch",
    "reason_too_long",
    "truncated",
    "duplicate_answer",
    "not_selected",
)
# Answers that are wrong about the group, usable as the rejected side of a preference pair.
INCORRECT_REASONS = ("label_mismatch", "copies_summary", "format_bad")


@dataclass(frozen=True)
class Judged:
    answer: dict  # the teacher answer row (record_id, group_id, label, sample, raw, error, ...)
    reason: str | None  # None = kept
    verdict: str | None = None
    rationale: str | None = None
    text: str | None = None  # canonical two-line answer when the raw text parsed

    @property
    def kept(self) -> bool:
        return self.reason is None

    @property
    def record_id(self) -> str:
        return self.answer["record_id"]


def _judge_one(answer: dict, config: DistillConfig, summaries: Sequence[str]) -> Judged:
    if answer.get("no_selection"):
        return Judged(answer, "no_selection")
    if answer.get("error") is not None or answer.get("raw") is None:
        return Judged(answer, "teacher_error")
    parsed = parse_verdict(answer["raw"])
    if not parsed.format_ok:
        return Judged(answer, "format_bad")
    # Canonical form: the student learns one spelling of the contract (ASCII colon, no stray spaces).
    fields = dict(verdict=parsed.verdict, rationale=parsed.reason, text=format_verdict(parsed.verdict, parsed.reason))
    if reason_copies_summary(parsed.reason, summaries):
        return Judged(answer, "copies_summary", **fields)
    if parsed.verdict != answer["label"]:
        return Judged(answer, "label_mismatch", **fields)
    if config.short_rationale and len(parsed.reason) > config.max_reason_chars:
        return Judged(answer, "reason_too_long", **fields)
    if answer.get("finish_reason") == "length":
        return Judged(answer, "truncated", **fields)
    return Judged(answer, None, **fields)


def judge_answers(
    answers: Sequence[dict], config: DistillConfig, summaries: dict[str, Sequence[str]] | None = None
) -> list[Judged]:
    """One Judged per answer, in input order; samples of a group are judged in sample order.
    `summaries`: each record id's Stage-A texts, which a kept reason must not copy."""
    summaries = summaries or {}
    for a in answers:
        if a.get("label") not in ("pass", "fail"):
            raise ValueError(
                f"answer for {a.get('record_id')!r}: label must be 'pass' or 'fail', got {a.get('label')!r}"
            )
    order = sorted(range(len(answers)), key=lambda i: (answers[i]["record_id"], answers[i]["sample"]))
    out: dict[int, Judged] = {}
    kept_texts: dict[str, set[str]] = {}
    for i in order:
        judged = _judge_one(answers[i], config, summaries.get(answers[i]["record_id"], ()))
        if judged.kept:
            seen = kept_texts.setdefault(judged.record_id, set())
            if judged.text in seen:
                judged = Judged(judged.answer, "duplicate_answer", judged.verdict, judged.rationale, judged.text)
            elif seen and not config.multi_sample:
                judged = Judged(judged.answer, "not_selected", judged.verdict, judged.rationale, judged.text)
            else:
                seen.add(judged.text)
        out[i] = judged
    return [out[i] for i in range(len(answers))]


def reason_counts(judged: Iterable[Judged]) -> dict[str, int]:
    counts = Counter(j.reason for j in judged if not j.kept)
    return {reason: counts.get(reason, 0) for reason in REJECT_REASONS}


def majority_wrong_records(trajectory_rows: Iterable[dict], guidance_hash: str) -> set[str]:
    """Record ids whose Stage-B majority verdict under the guidance `guidance_hash` was wrong.

    A group whose rollouts produced no well-formed verdict counts as wrong, as in Stage-B's accuracy.
    """
    votes: dict[str, list[str | None]] = {}
    labels: dict[str, str] = {}
    for row in trajectory_rows:
        if row.get("guidance_hash") != guidance_hash or row.get("error") is not None:
            continue
        votes.setdefault(row["record_id"], []).append(row.get("verdict"))
        labels[row["record_id"]] = row["label"]
    return {rid for rid, vs in votes.items() if majority(vs).predicted != labels[rid]}


def hard_records(records: Sequence[dict], majority_wrong: set[str], config: DistillConfig) -> set[str]:
    """Record ids whose kept rows are marked `hard_case` (fusion weighs them by its hard_case_factor)."""
    hard = set()
    for rec in records:
        if (config.hard_fail_groups and rec["label"] == "fail") or (
            config.hard_majority_wrong and rec["record_id"] in majority_wrong
        ):
            hard.add(rec["record_id"])
    return hard


@dataclass(frozen=True)
class PreferencePair:
    chosen: Judged
    rejected: Judged
    rejected_text: str


def _incorrect_text(j: Judged) -> str | None:
    if j.reason in ("label_mismatch", "copies_summary"):
        return j.text
    if j.reason == "format_bad":
        text = j.answer["raw"].strip()
        return text or None
    return None


def preference_pairs(judged: Sequence[Judged]) -> list[PreferencePair]:
    """Per group, each distinct incorrect answer paired with a kept answer (round robin).

    Failed requests never enter a pair; label mismatches come before broken formats.
    """
    by_record: dict[str, list[Judged]] = {}
    for j in judged:
        by_record.setdefault(j.record_id, []).append(j)
    pairs = []
    for rid in sorted(by_record):
        group = sorted(by_record[rid], key=lambda j: j.answer["sample"])
        kept = [j for j in group if j.kept]
        if not kept:
            continue
        seen: set[str] = set()
        bad = []
        for reason in INCORRECT_REASONS:
            for j in group:
                text = _incorrect_text(j) if j.reason == reason else None
                if text is not None and text not in seen:
                    seen.add(text)
                    bad.append((j, text))
        for k, (j, text) in enumerate(bad):
            pairs.append(PreferencePair(chosen=kept[k % len(kept)], rejected=j, rejected_text=text))
    return pairs
