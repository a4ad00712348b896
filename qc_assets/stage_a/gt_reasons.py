"""Reviewers' ground-truth fail reasons from an Excel sheet, attached to fail records by group id.

The seed (`add_gt_fail_reason` / `excel_path`) reads the reviewers' export and writes
`gt_fail_reason_text` onto each Stage-A record. Read with openpyxl: a real .xlsx reader that is pure
Python (no Rust wheel) and reads the header row by name in read-only mode, so a large export streams.

Only fail records get a reason: a resubmission's pass record shares the id but not the verdict.
Stage-B shows these reasons to its reflector for train groups only (see stage_b/reflection.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

GT_FIELD = "gt_fail_reason_text"


@dataclass
class GtAttachResult:
    attached: int = 0  # fail records that got a reason
    fail_without_reason: list[str] = field(default_factory=list)  # fail group ids absent from the sheet
    unmatched_sheet_ids: list[str] = field(default_factory=list)  # sheet ids with no fail record


def read_fail_reasons(excel_path: str | Path, group_column: str, reason_column: str) -> dict[str, str]:
    """{group id: reason} from the first sheet; several rows of one id are joined with '；'."""
    import openpyxl  # loaded only when a run asks for ground-truth reasons

    path = Path(excel_path)
    if not path.is_file():
        raise ValueError(
            f"excel_path {path} does not exist: point excel_path at the reviewers' .xlsx export "
            f"or set add_gt_fail_reason: false"
        )
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
        missing = [c for c in (group_column, reason_column) if c not in header]
        if missing:
            raise ValueError(
                f"{path}: the first sheet's header lacks {missing} (found {header}); set "
                f"excel_group_column / excel_reason_column to the sheet's column names"
            )
        gi, ri = header.index(group_column), header.index(reason_column)
        reasons: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            gid = row[gi] if gi < len(row) else None
            text = row[ri] if ri < len(row) else None
            if gid is None or text is None or not str(text).strip():
                continue
            if str(text).strip() not in reasons[str(gid).strip()]:
                reasons[str(gid).strip()].append(str(text).strip())
    finally:
        book.close()
    return {gid: "；".join(texts) for gid, texts in reasons.items()}


def attach_fail_reasons(records: list[dict], reasons: dict[str, str]) -> GtAttachResult:
    """Set `gt_fail_reason_text` on every record (None where there is none); fail records only get text."""
    result = GtAttachResult()
    fail_ids = set()
    for rec in records:
        text = reasons.get(rec["group_id"]) if rec["label"] == "fail" else None
        rec[GT_FIELD] = text
        if rec["label"] == "fail":
            fail_ids.add(rec["group_id"])
            if text is None:
                result.fail_without_reason.append(rec["group_id"])
            else:
                result.attached += 1
    result.unmatched_sheet_ids = sorted(set(reasons) - fail_ids)
    return result


def top_gt_reasons(records: list[dict], limit: int = 10) -> list[tuple[str, int]]:
    """The most frequent ground-truth fail reasons among the records (each reason clipped for a table)."""
    counts = Counter(r[GT_FIELD][:60] for r in records if r.get(GT_FIELD))
    return counts.most_common(limit)
