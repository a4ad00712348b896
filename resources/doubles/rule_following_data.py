"""The hidden-rule Stage-B dataset the Stage-B learning benchmark (and its generator test) runs on.

Stage-A-style records for one mission whose labels follow hidden rules: several failure patterns,
label noise, and near-miss wording that mentions a defect word but describes a pass. Fixed before any
model runs; never tuned to make a model look good. `ScriptedRuleFollowingServer` (llm_servers.py)
learns it only when the kept guidance quotes the right keywords.
"""

from __future__ import annotations

import random
from collections import Counter

MISSION = "挡风板安装检查"

# Hidden rules: a group fails if any photo shows one of these (the scaffold covers only drawings).
FAIL_PATTERNS = {
    "empty_slot": ["第{k}槽位空置，未安装挡风板", "机柜下部有{k}个空槽位没有挡风板"],
    "loose": ["挡风板松动，边缘有明显缝隙", "一块挡风板向外翘起，未卡紧"],
    "screws": ["挡风板固定螺丝缺失{k}颗", "挡风板只用一颗螺丝固定，另一侧螺丝缺失"],
    "drawing": ["照片为设计图纸截图，非现场照片"],
}
# Near misses: defect words, negated or resolved; the group still passes.
NEAR_MISS = [
    "挡风板无松动，未见缝隙",
    "未发现螺丝缺失，挡风板固定牢固",
    "槽位无空置，挡风板齐全",
    "原空槽位已补装挡风板",
]
FIXED = "问题已整改，挡风板安装到位"
FILLER = [
    "机柜正面，BBU安装在第二层，指示灯正常",
    "机柜侧面，线缆绑扎整齐",
    "空槽位均已安装挡风板，安装到位",
    "机柜整体照片，柜门完好",
    "挡风板齐全，螺丝紧固",
    "接地排清晰可见，标签完整",
]


def generate(n_groups: int, noise: float, seed: int) -> tuple[list[dict], dict]:
    rng = random.Random(seed)
    records, stats = [], Counter()
    for g in range(n_groups):
        n_images = rng.randint(2, 3)
        texts = rng.sample(FILLER, n_images)
        fail = rng.random() < 0.5
        spot = rng.randrange(n_images)
        if fail:
            rule = rng.choice(sorted(FAIL_PATTERNS))
            texts[spot] = rng.choice(FAIL_PATTERNS[rule]).format(k=rng.randint(1, 3))
            stats[f"rule:{rule}"] += 1
        elif rng.random() < 0.5:
            texts[spot] = rng.choice(NEAR_MISS)
            stats["near_miss"] += 1
        label = "fail" if fail else "pass"
        if rng.random() < noise:
            label = "pass" if fail else "fail"
            stats["noisy_label"] += 1
        records.append(_record(f"g{g:03d}", label, texts))
        if g % 8 == 0 and fail:  # a resubmission: the same group with the defect fixed, passed
            fixed = [*texts[:spot], FIXED, *texts[spot + 1 :]]
            records.append(_record(f"g{g:03d}", "pass", fixed, suffix="resub"))
            stats["resubmission"] += 1
    stats["records"] = len(records)
    stats["fail_labels"] = sum(r["label"] == "fail" for r in records)
    return records, dict(stats)


def _record(group_id: str, label: str, texts: list[str], suffix: str = "") -> dict:
    return {
        "record_id": f"{MISSION}/{label}/{group_id}{suffix}",
        "group_id": group_id,
        "mission": MISSION,
        "label": label,
        "images": [f"{group_id}/{i}.jpg" for i in range(1, len(texts) + 1)],
        "per_image": {f"image_{i}": t for i, t in enumerate(texts, start=1)},
    }
