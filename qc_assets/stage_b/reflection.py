"""Reflection: pick contrastive cases, ask an LLM for rule operations, parse its JSON strictly.

An answer that is not valid JSON (small models write plenty) yields no operations and an error
string the loop records in rule_candidates.jsonl; it never stops the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from qc_assets.stage_a.gt_reasons import GT_FIELD
from qc_assets.stage_b.aggregate import GroupOutcome
from qc_assets.stage_b.guidance import OPS, RuleOp
from qc_assets.stage_b.prompts import ordered_summaries

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_ID = re.compile(r"^G[1-9]\d*$")


_RULE_ID = {"type": "string", "pattern": "^G[1-9][0-9]{0,2}$"}
_TEXT = {"type": "string", "minLength": 4, "maxLength": 200}


def _op_schema(op: str, **fields) -> dict:
    return {
        "type": "object",
        "properties": {"op": {"const": op}, **fields},
        "required": ["op", *fields],
        "additionalProperties": False,
    }


# The rule operations of REFLECTION_SCHEMA (prompts.py) as a JSON schema, for backends that can decode
# under one (`StageBLoopConfig.reflection_json_schema`). It guarantees the shape, not a good rule:
# the filters and the gate still judge the content.
REFLECTION_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "operations": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    _op_schema("add", text=_TEXT),
                    _op_schema("update", id=_RULE_ID, text=_TEXT),
                    _op_schema("remove", id=_RULE_ID),
                    _op_schema(
                        "merge", ids={"type": "array", "items": _RULE_ID, "minItems": 2, "maxItems": 3}, text=_TEXT
                    ),
                ]
            },
        }
    },
    "required": ["operations"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class ParsedReflection:
    ops: tuple[RuleOp, ...]
    error: str | None  # "invalid_json: ..." when nothing parsed; per-op problems are in `op_errors`
    op_errors: tuple[str, ...] = ()


def select_cases(
    outcomes: Sequence[GroupOutcome],
    records: dict[str, dict],
    reasons: dict[str, str],
    batch_size: int,
    offset: int = 0,
    n_contrast: int = 2,
    *,
    train_ids: frozenset[str] | set[str],
) -> list[dict]:
    """Errors first (mixed votes before unanimous ones), then mixed-but-right groups, then up to
    `n_contrast` confidently right groups of the other label for contrast. `offset` rotates the
    error list so successive rounds show different groups.

    Reflection learns from train only: every outcome must be a train record (`train_ids`), and only
    then does a case carry the reviewers' ground-truth fail reason (`gt_fail_reason_text`, Stage-A's
    `add_gt_fail_reason`). A selection or test group reaching here would leak into the rules.
    """
    leaked = sorted(o.record_id for o in outcomes if o.record_id not in train_ids)
    if leaked:
        raise ValueError(f"reflection may only see train groups, got {len(leaked)} others (e.g. {leaked[:3]})")

    def key(o: GroupOutcome):
        return (o.agreement, o.record_id)

    wrong = sorted((o for o in outcomes if not o.correct), key=lambda o: (not o.mixed, *key(o)))
    if wrong and offset:
        k = offset % len(wrong)
        wrong = wrong[k:] + wrong[:k]
    shaky = sorted((o for o in outcomes if o.correct and o.mixed), key=key)
    chosen = (wrong + shaky)[:batch_size]
    if not chosen:
        return []
    wrong_labels = {o.label for o in chosen if not o.correct}
    steady = sorted(
        (o for o in outcomes if o.correct and not o.mixed and o.label not in wrong_labels), key=lambda o: o.record_id
    )
    chosen += steady[:n_contrast]
    cases = []
    for o in chosen:
        rec = records[o.record_id]
        cases.append(
            {
                "record_id": o.record_id,
                "group_id": o.group_id,
                "label": o.label,
                "predicted": o.predicted,
                "correct": o.correct,
                "agreement": o.agreement,
                "summaries": ordered_summaries(rec),
                "reason": reasons.get(o.record_id),
                "gt_fail_reason": rec.get(GT_FIELD) if o.record_id in train_ids else None,
            }
        )
    return cases


def _extract_json(text: str):
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    last_error = "no JSON object found"
    for cand in candidates:
        try:
            return json.loads(cand), None
        except json.JSONDecodeError as err:
            last_error = f"{err.msg} at char {err.pos}"
    return None, last_error


def _as_op(item) -> RuleOp:
    if not isinstance(item, dict):
        raise ValueError(f"operation must be an object, got {type(item).__name__}")
    op = item.get("op")
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    ids = item.get("ids")
    if ids is None:
        ids = [item["id"]] if "id" in item else []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"ids must be a list of rule id strings, got {ids!r}")
    ids = [i.strip().upper() for i in ids]
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise ValueError(f"{op} may only name learned rules G1..Gn, got {bad}")
    text = item.get("text")
    if op != "remove" and (not isinstance(text, str) or not text.strip()):
        raise ValueError(f"{op} needs a non-empty text, got {text!r}")
    rationale = item.get("rationale") or item.get("reason")
    return RuleOp(
        op=op,
        text=text.strip() if isinstance(text, str) else None,
        ids=tuple(ids),
        rationale=rationale if isinstance(rationale, str) else None,
    )


def parse_operations(text: str | None) -> ParsedReflection:
    if text is None:
        return ParsedReflection((), "invalid_json: no text (failed request)")
    data, error = _extract_json(text)
    if error is not None:
        return ParsedReflection((), f"invalid_json: {error}")
    items = data.get("operations", data.get("ops")) if isinstance(data, dict) else data
    if isinstance(data, dict) and items is None and "op" in data:
        items = [data]
    if not isinstance(items, list):
        return ParsedReflection((), 'invalid_json: expected {"operations": [...]}')
    ops, errors = [], []
    for i, item in enumerate(items):
        try:
            ops.append(_as_op(item))
        except (ValueError, KeyError) as err:
            errors.append(f"operation {i}: {err}")
    return ParsedReflection(tuple(ops), None, tuple(errors))
