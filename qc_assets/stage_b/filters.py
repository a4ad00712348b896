"""Cheap filters run on proposed edits before the (expensive) gate.

They drop rules that copy the prompt's example (placeholders), copy a summary (they fit one group,
not a pattern), hedge (a third state the verdict contract cannot express), duplicate an existing
rule, touch immutable rules, or repeat an edit the gate already rejected in this run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from qc_assets.stage_b.guidance import Guidance, RuleOp
from qc_assets.stage_b.prompts import PLACEHOLDERS

HEDGES = (
    "视情况",
    "无法判断",
    "无法确定",
    "不确定",
    "待定",
    "待复核",
    "人工复核",
    "需复核",
    "进一步确认",
    "部分通过",
    "酌情",
    "maybe",
    "unsure",
    "unknown",
)
_CASE_REFS = re.compile(r"(图片\s*\d|image_\d|案例\s*\d|组号)")
MIN_RULE_CHARS = 4
MAX_RULE_CHARS = 200
COPY_MIN_RUN = 12  # a shared run this long with a summary is copying
COPY_SHARE = 0.7  # or a shared run covering this share of the rule
DUPLICATE_JACCARD = 0.8
# The schema example's texts, with and without brackets, and the old-style example words.
_PLACEHOLDERS = {re.sub(r"[<>]", "", p) for p in PLACEHOLDERS} | {"新规则", "改写后的规则", "合并后的规则", "规则"}


def normalize(text: str) -> str:
    return re.sub(r"[\s，。,.;；:：!！?？、\"'“”‘’()（）\[\]【】]", "", text or "").lower()


def longest_common_run(a: str, b: str) -> int:
    best = 0
    prev = [0] * (len(b) + 1)
    for ch in a:
        cur = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if ch == other:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


# The verdict contract (GRPO proposal): a reason may cite 图片_i but must not copy a summary. 12
# normalized characters is a whole clause of a Stage-A summary (e.g. 机柜下部挡风板松动边缘有缝隙 is 14),
# while a reason in its own words shares only the defect's name with one (挡风板松动, 5-6 characters).
REASON_COPY_MIN_RUN = 12
# A short summary repeated whole is a copy too, once it is longer than a defect's name.
REASON_COPY_WHOLE_MIN = 8
_IMAGE_REFS = re.compile(r"图片\s*[_＿]?\s*\d+|image_\d+")


def reason_copies_summary(reason: str | None, summaries: Iterable[str]) -> bool:
    """True when the reason repeats a whole summary (>= REASON_COPY_WHOLE_MIN characters) or shares a
    run of >= REASON_COPY_MIN_RUN normalized characters with one (whitespace and punctuation ignored,
    图片_i references removed first).

    >>> reason_copies_summary("图片_2 挡风板松动", ["机柜下部挡风板松动，边缘有缝隙"])
    False
    >>> reason_copies_summary("机柜下部挡风板松动，边缘有缝隙", ["机柜下部挡风板松动，边缘有缝隙"])
    True
    """
    norm = normalize(_IMAGE_REFS.sub("", reason or ""))
    if not norm:
        return False
    for summary in summaries:
        other = normalize(summary)
        if other and (
            other in norm
            and len(other) >= REASON_COPY_WHOLE_MIN
            or longest_common_run(norm, other) >= REASON_COPY_MIN_RUN
        ):
            return True
    return False


def bigram_jaccard(a: str, b: str) -> float:
    sa = {a[i : i + 2] for i in range(len(a) - 1)} or {a}
    sb = {b[i : i + 2] for i in range(len(b) - 1)} or {b}
    return len(sa & sb) / len(sa | sb)


def text_problem(text: str, existing: Iterable[str], summaries: Sequence[str]) -> str | None:
    """The filter reason for a rule text, or None if it may go to the gate."""
    norm = normalize(text)
    if "<" in text or ">" in text or norm in _PLACEHOLDERS:
        return "placeholder"
    if len(norm) < MIN_RULE_CHARS or len(norm) > MAX_RULE_CHARS:
        return "length"
    lowered = text.lower()
    if any(h in lowered for h in HEDGES):
        return "hedge"
    if _CASE_REFS.search(text):
        return "copies_summary"
    for summary in summaries:
        run = longest_common_run(norm, normalize(summary))
        if run >= COPY_MIN_RUN or (len(norm) >= 8 and run >= COPY_SHARE * len(norm)):
            return "copies_summary"
    for other in existing:
        other_norm = normalize(other)
        if norm == other_norm or bigram_jaccard(norm, other_norm) >= DUPLICATE_JACCARD:
            return "duplicate"
    return None


def filter_ops(
    ops: Sequence[RuleOp], guidance: Guidance, summaries: Sequence[str], rejected: set[str]
) -> list[tuple[RuleOp, str | None]]:
    """Each op with the reason it was dropped (None = goes to the gate). Order is preserved."""
    out: list[tuple[RuleOp, str | None]] = []
    seen: set[str] = set()
    accepted_texts: list[str] = []
    # a reworded rule, or the same rule sent as another kind of op, is still the rejected edit
    rejected_texts = [normalize(json.loads(sig)[2]) for sig in rejected]
    for op in ops:
        sig = op.signature()
        norm = normalize(op.text or "")
        if sig in rejected or (
            norm and any(bigram_jaccard(norm, old) >= DUPLICATE_JACCARD for old in rejected_texts if old)
        ):
            out.append((op, "previously_rejected"))
            continue
        if sig in seen:
            out.append((op, "duplicate"))
            continue
        seen.add(sig)
        try:
            guidance.apply(op, epoch=0)
        except ValueError:
            out.append((op, "invalid_target"))
            continue
        reason = None
        if op.op != "remove":
            # An update is compared with the other rules, not with the text it replaces.
            existing = [it.text for it in guidance.items if it.id not in op.ids] + accepted_texts
            reason = text_problem(op.text or "", existing, summaries)
        if reason is None and op.op != "remove":
            accepted_texts.append(op.text or "")
        out.append((op, reason))
    return out
