"""Where distilled answers come from: Stage-B's own selections, or a second teacher pass.

Seed 000 distils in the converged epoch: one row per group, the candidate Stage-B selected, with the
Stage-B model pointed at the teacher. `selections` does that from `selections.jsonl` (no teacher call);
`teacher` asks the teacher again under the kept guidance. Either way the answers go through the same
label filter, and only train and selection groups are distilled: the test side of the Stage-B split is
held out for the kept guidance's report and never becomes training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qc_assets.stage_b.guidance import Guidance

DISTILLED_POOLS = ("train", "selection")
# selections.jsonl rows written before these fields were recorded cannot be checked against the teacher
SELECTED_FIELDS = ("raw", "seed", "sample", "temperature", "top_p", "model", "finish_reason")


@dataclass(frozen=True)
class SourceChoice:
    source: str  # selections | teacher
    reason: str
    stage_b_model: str | None


def test_record_ids(split_rows: Iterable[dict], run_id: str) -> set[str]:
    """The record ids on the test side of Stage-B run `run_id` (the last split it wrote)."""
    rows = [r for r in split_rows if r.get("run_id") == run_id]
    if not rows:
        raise ValueError(
            f"splits.jsonl has no split for Stage-B run {run_id!r}; re-materialize stage_b_guidance "
            "so distillation knows which groups are held out for test"
        )
    return set(rows[-1]["test"])


def kept_epoch_rows(selection_rows: Iterable[dict], run_id: str, guidance: Guidance) -> list[dict]:
    """Selections of the last epoch of run `run_id` that evaluated `guidance` on the train and selection
    pools: for a converged run, the epoch that accepted no edit."""
    rows = [
        r
        for r in selection_rows
        if r.get("run_id") == run_id
        and r.get("pool") in DISTILLED_POOLS
        and r.get("guidance_version") == guidance.version
    ]
    if not rows:
        raise ValueError(
            f"selections.jsonl has no train/selection rows of Stage-B run {run_id!r} for guidance "
            f"v{guidance.version}; re-materialize stage_b_guidance, or set source: teacher"
        )
    epoch = max(r["epoch"] for r in rows)
    return [r for r in rows if r["epoch"] == epoch]


def stage_b_model(rows: Sequence[dict]) -> str | None:
    """The model fingerprint that produced the selected candidates; None when no row records one."""
    models = {r["selected"]["model"] for r in rows if r.get("selected") and r["selected"].get("model")}
    if len(models) > 1:
        raise ValueError(
            f"the kept epoch's selections come from {len(models)} models {sorted(models)}; expected one Stage-B model"
        )
    return next(iter(models), None)


def stage_b_constrained(rows: Sequence[dict]) -> bool | None:
    """Whether the selected candidates were decoded under the verdict regex; None when unrecorded."""
    flags = {bool(r["selected"]["regex"]) for r in rows if r.get("selected") and "regex" in r["selected"]}
    return None if len(flags) != 1 else flags.pop()


def choose_source(
    requested: str,
    stage_b_fingerprint: str | None,
    teacher_fingerprint: str,
    constrained: bool = False,
    stage_b_regex: bool | None = None,
) -> SourceChoice:
    """`constrained` (the distill config) asks for answers decoded under the verdict contract: `auto`
    takes Stage-B's selections only when they were (`stage_b_regex`)."""
    same = stage_b_fingerprint == teacher_fingerprint
    if requested == "teacher":
        return SourceChoice("teacher", "source: teacher requested", stage_b_fingerprint)
    if requested == "selections":
        if not same:
            raise ValueError(
                f"source: selections needs Stage-B to have run with the teacher, but Stage-B's model is "
                f"{stage_b_fingerprint!r} and the teacher is {teacher_fingerprint!r}; point QC_LLM_* at "
                "the teacher and re-run Stage-B, or set source: teacher"
            )
        return SourceChoice("selections", "source: selections requested", stage_b_fingerprint)
    if same and constrained and not stage_b_regex:
        return SourceChoice(
            "teacher",
            "auto: constrained decoding asked, Stage-B's selections were decoded without the verdict regex",
            stage_b_fingerprint,
        )
    if same:
        return SourceChoice("selections", "auto: Stage-B ran with the teacher model", stage_b_fingerprint)
    return SourceChoice(
        "teacher", f"auto: Stage-B's model {stage_b_fingerprint!r} is not the teacher", stage_b_fingerprint
    )


def selected_answers(rows: Sequence[dict], records: dict[str, dict]) -> list[dict]:
    """Answer rows shaped like `teacher_answers.jsonl` rows, one per distilled record: the selected
    candidate, or `no_selection` when no well-formed candidate carried the majority."""
    answers = []
    for row in sorted(rows, key=lambda r: r["record_id"]):
        rec = records.get(row["record_id"])
        if rec is None:
            raise ValueError(
                f"selections.jsonl names record {row['record_id']!r}, which is not in Stage-A's "
                "records; re-materialize stage_b_guidance on the current Stage-A output"
            )
        chosen = row.get("selected")
        base = {
            "record_id": rec["record_id"],
            "group_id": rec["group_id"],
            "label": rec["label"],
            "epoch": row["epoch"],
            "pool": row["pool"],
        }
        if chosen is None:
            answers.append({**base, "sample": 0, "seed": None, "raw": None, "error": None, "no_selection": True})
            continue
        missing = [k for k in SELECTED_FIELDS if k not in chosen]
        if missing:
            raise ValueError(
                f"the selection of record {rec['record_id']!r} lacks {missing} (written by an older "
                "Stage-B); re-materialize stage_b_guidance, or set source: teacher"
            )
        answers.append({**base, **{k: chosen[k] for k in SELECTED_FIELDS}, "teacher": chosen["model"], "error": None})
    return answers
