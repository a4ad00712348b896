"""Keyword-rule records for the Stage-B tests that run against `ScriptedRuleFollowingServer`.

A group fails when one of its summaries says the wind baffle is loose (松动); every summary mentions
the cabinet (机柜), so a rule on 机柜 fails every good group. `noisy` groups carry a pass-looking
summary under a fail label, so the train pool always keeps an error to reflect on.
"""

from __future__ import annotations

from qc_assets.missions import Mission

MISSION = Mission("挡风板安装检查", "bbu", "空槽位须装挡风板。", ("只看摘要。",))

CORRECT = {"op": "add", "text": "挡风板出现「松动」的判为不通过"}
HARMFUL = {"op": "add", "text": "照片里能看到「机柜」就一律不合格"}
USELESS = {"op": "add", "text": "螺栓发现「生锈」痕迹时判不通过"}

GOOD = ["机柜正面，挡风板齐全", "机柜侧面，线缆绑扎整齐", "机柜整体照片，柜门完好"]
LOOSE = "机柜下部挡风板松动，边缘有缝隙"


def keyword_records(
    n_groups: int = 40, noisy: int = 6, mission: str = MISSION.name, loose_in: set[str] | None = None
) -> list[dict]:
    """Every third group fails (a loose baffle), the others pass; the first `noisy` groups with
    g % 3 == 0 are labelled fail with good summaries. `loose_in`, when given, names the groups whose summaries say 松动
    instead (labels unchanged), to build a distribution shift between sides."""
    rows = []
    for g in range(n_groups):
        gid = f"g{g:03d}"
        label = "fail" if g % 3 == 1 or (g % 3 == 0 and g // 3 < noisy) else "pass"
        loose = (g % 3 == 1) if loose_in is None else gid in loose_in
        texts = [GOOD[g % 3], LOOSE if loose else GOOD[(g + 1) % 3]]
        rows.append(group_record(mission, gid, label, texts))
    return rows


def group_record(mission: str, gid: str, label: str, texts: list[str]) -> dict:
    """A Stage-A record of one group whose photos' summaries are `texts`."""
    return {
        "record_id": f"{mission}/{label}/{gid}",
        "group_id": gid,
        "mission": mission,
        "label": label,
        "images": [f"{gid}/{i}.jpg" for i in range(1, len(texts) + 1)],
        "per_image": {f"image_{i}": t for i, t in enumerate(texts, start=1)},
        "model_fingerprint": "test",
        "prompt_hash": "test",
        "decode": {},
    }
