"""Shared data builders for the fusion tests: Stage-A records over the sample photo layout and
distill_chatml rows in the distill asset's contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from qc_assets.stage_a.records import record_id
from qc_assets.stage_b.verdict import format_verdict
from resources.store import atomic_write_jsonl

MISSION = "挡风板安装检查"
SUMMARIES = {"pass": "机柜空槽位挡风板齐全，安装到位", "fail": "机柜有两个空槽位缺少挡风板"}
LABEL_FOLDERS = {"审核通过": "pass", "审核不通过": "fail"}


def stage_a_records(images_root: Path, mission: str = MISSION) -> list[dict]:
    """One record per group folder of the sample image set, with plausible summaries."""
    rows = []
    for folder, label in LABEL_FOLDERS.items():
        for group in sorted((Path(images_root) / mission / folder).iterdir()):
            if not group.is_dir():
                continue
            images = sorted(p.relative_to(Path(images_root) / mission).as_posix() for p in group.glob("*.jpg"))
            rows.append(
                {
                    "record_id": record_id(mission, label, group.name),
                    "group_id": group.name,
                    "mission": mission,
                    "label": label,
                    "images": images,
                    "per_image": {f"image_{i}": SUMMARIES[label] for i in range(1, len(images) + 1)},
                    "model_fingerprint": "test",
                    "prompt_hash": "test",
                    "decode": {},
                }
            )
    return rows


def distill_rows(records: list[dict], mission: str = MISSION) -> list[dict]:
    reasons = {"pass": "挡风板齐全且安装到位", "fail": "空槽位缺少挡风板"}
    return [
        {
            "group_id": r["group_id"],
            "mission": mission,
            "label": r["label"],
            "guidance_version": 0,
            "messages": [
                {"role": "system", "content": f"你是安装质量审核员。任务「{mission}」。"},
                {"role": "user", "content": "图片1: " + r["per_image"]["image_1"]},
                {"role": "assistant", "content": format_verdict(r["label"], reasons[r["label"]])},
            ],
        }
        for r in records
    ]


def write_inputs(data_root: Path, images_root: Path, with_distill: bool = True) -> list[dict]:
    records = stage_a_records(images_root)
    atomic_write_jsonl(Path(data_root) / "stage_a_summaries" / MISSION / "records.jsonl", records)
    if with_distill:
        atomic_write_jsonl(Path(data_root) / "distill_chatml" / MISSION / "distill_chatml.jsonl", distill_rows(records))
    return records


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on this shared 2-core machine, spinning OpenMP workers make the tiny model's
    small matmuls ~20x slower than a single thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
