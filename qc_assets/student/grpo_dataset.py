"""Stage-A records -> TRL's conversational prompt format for GRPO.

One row per group occurrence (a Stage-A record): `prompt` = the production Stage-B messages
[system, user] under the given guidance (never the label), plus `label`, `mission`, `group_id` and
`record_id` columns, and `summaries` (the group's Stage-A texts, so the format reward can tell a
reason that copies one), that TRL passes through to the reward functions. A resubmitted group (same id,
both labels) has two records with different summaries, so it gives two rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from qc_assets.stage_b.prompts import build_messages

LABELS = ("pass", "fail")


def _image_index(key: str) -> int:
    return int(key.rsplit("_", 1)[-1])


def build_grpo_dataset(records: Sequence[dict], mission, guidance) -> list[dict]:
    rows, seen = [], set()
    for rec in sorted(records, key=lambda r: r["record_id"]):
        if rec.get("mission", mission.name) != mission.name:
            raise ValueError(f"record {rec['record_id']!r} is for mission {rec['mission']!r}, not {mission.name!r}")
        if rec["label"] not in LABELS:
            raise ValueError(f"record {rec['record_id']!r}: label must be one of {LABELS}, got {rec['label']!r}")
        if rec["record_id"] in seen:
            raise ValueError(f"record_id {rec['record_id']!r} appears twice")
        seen.add(rec["record_id"])
        rows.append(
            {
                "prompt": build_messages(mission, guidance, rec),
                "label": rec["label"],
                "mission": mission.name,
                "group_id": rec["group_id"],
                "record_id": rec["record_id"],
                "summaries": [rec["per_image"][k] for k in sorted(rec["per_image"], key=_image_index)],
            }
        )
    return rows
