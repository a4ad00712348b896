"""From the resume log to records: one record per kept group, with what the log says about each photo.

Beside the contract columns a record carries how many of its photos' answers were cut at
`max_new_tokens` (`truncated_images`, and which: `truncated_keys`), so Stage-B, distillation and the
production verdicts can see it. With `postprocess` the record holds the cleaned text; the raw text
stays in `summaries.jsonl`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from qc_assets.stage_a import postprocess as cleanup
from qc_assets.stage_a.discovery import Group, Skipped
from qc_assets.stage_a.records import CONTRACT_VERSION, image_keys, record_id

TRUNCATED = "length"  # the backends' finish_reason when max_new_tokens cut the answer
EMPTY_REASON = "model returned an empty summary"


@dataclass
class BuiltRecords:
    records: list[dict] = field(default_factory=list)
    empty: list[Skipped] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)  # one per summarised photo
    truncated: int = 0  # summarised photos whose answer was cut
    rules_fired: Counter = field(default_factory=Counter)  # postprocess rule -> photos it changed


def build_records(kept: list[Group], done: dict, provenance: dict, postprocess: bool) -> BuiltRecords:
    """`done`: (path, sha256) -> the log row; `provenance`: the columns every record carries."""
    out = BuiltRecords()
    for g in kept:
        kept_images = []
        for img in g.images:
            row = done[(img.path, img.sha256)]
            text = row["summary"].strip()
            if postprocess:
                text, fired = cleanup.clean(text)
                out.rules_fired.update(fired)
            if not text:
                out.empty.append(Skipped(img.path, EMPTY_REASON))
                continue
            kept_images.append((img, text, row))
        if not kept_images:
            continue
        keys = image_keys(len(kept_images))
        cut = [key for key, (_, _, row) in zip(keys, kept_images, strict=True) if row.get("finish_reason") == TRUNCATED]
        out.truncated += len(cut)
        out.completion_tokens += [int(row["completion_tokens"]) for _, _, row in kept_images]
        out.records.append(
            {
                "group_id": g.group_id,
                "mission": g.mission,
                "label": g.label,
                "images": [img.path for img, _, _ in kept_images],
                "per_image": dict(zip(keys, (text for _, text, _ in kept_images), strict=True)),
                "record_id": record_id(g.mission, g.label, g.group_id),
                "image_sha256": [img.sha256 for img, _, _ in kept_images],
                "folders": list(g.folders),
                "truncated_images": len(cut),
                "truncated_keys": cut,
                **provenance,
                "contract_version": CONTRACT_VERSION,
            }
        )
    return out
