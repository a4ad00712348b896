"""Stage-B prompts: the production verdict prompt and the reflection prompt.

`build_messages` is the production prompt; distillation reuses it byte for byte, so its output must
depend only on the mission, the guidance texts and the record's per-image summaries. It never
includes the label (the seed design put the label in the user turn; a student trained on that learns
to read the answer off the prompt).
"""

from __future__ import annotations

import hashlib
import json
import re

from qc_assets.stage_b.guidance import Guidance

_IMAGE_KEY = re.compile(r"^image_(\d+)$")

OUTPUT_PROTOCOL = "只输出两行：第一行写「通过」或「不通过」；第二行写「理由: 」加一句理由。"


def ordered_summaries(record: dict) -> list[tuple[int, str]]:
    """per_image as [(n, text)] in numeric order; ValueError on keys other than image_1..image_N."""
    per_image = record.get("per_image")
    if not isinstance(per_image, dict) or not per_image:
        raise ValueError(f"record {record.get('record_id')!r}: per_image must be a non-empty dict")
    items = []
    for key, text in per_image.items():
        m = _IMAGE_KEY.match(key)
        if not m:
            raise ValueError(f"record {record.get('record_id')!r}: per_image key {key!r} is not image_<n>")
        items.append((int(m.group(1)), str(text)))
    items.sort()
    if [n for n, _ in items] != list(range(1, len(items) + 1)):
        raise ValueError(f"record {record.get('record_id')!r}: per_image keys must be image_1..image_{len(items)}")
    return items


def render_rules(guidance: Guidance) -> str:
    return "\n".join(f"{i}. [{it.id}] {it.text}" for i, it in enumerate(guidance.items, start=1))


def build_messages(mission, guidance: Guidance, record: dict) -> list[dict]:
    """[system, user] for one group; the production Stage-B prompt."""
    if guidance.mission != mission.name:
        raise ValueError(f"guidance is for mission {guidance.mission!r}, record prompt for {mission.name!r}")
    system = (
        f"你是安装质量审核员。任务「{mission.name}」：根据一组照片的摘要判断该组是否通过审核。\n"
        f"审核规则：\n{render_rules(guidance)}\n"
        f"{OUTPUT_PROTOCOL}"
    )
    lines = [f"图片{n}: {text}" for n, text in ordered_summaries(record)]
    user = "以下是同一组照片的逐图摘要：\n" + "\n".join(lines) + "\n请依据审核规则判断该组是否通过，按两行格式回答。"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# Placeholders are in angle brackets so a reflector that copies the example is caught by the filters.
PLACEHOLDERS = ("<新规则>", "<新文本>", "<合并后的规则>")
REFLECTION_SCHEMA = (
    '{"operations": [操作, ...]}，操作为以下之一：\n'
    '{"op": "add", "text": "<新规则>"}\n'
    '{"op": "update", "id": "G1", "text": "<新文本>"}\n'
    '{"op": "remove", "id": "G1"}\n'
    '{"op": "merge", "ids": ["G1", "G2"], "text": "<合并后的规则>"}'
)


def build_reflection_messages(
    mission, guidance: Guidance, cases: list[dict], rejected: list[str], label_hint: bool = False
) -> list[dict]:
    """Ask for rule edits as JSON. `cases`: dicts with summaries, predicted, correct, reasons, label.

    By default each case shows the model's majority verdict and whether review found it right or
    wrong; `label_hint` additionally states the reviewers' label, for experiments only.
    """
    system = (
        "你负责改进质检审核规则。审核模型按规则判断每组照片摘要是否通过；下面是它判错或犹豫的案例，"
        "以及判对的对照案例。请提出少量规则修改，使模型以后判对。\n"
        "要求：规则要概括（不要抄写摘要原文、不要提组号或图片编号），只能给出通过或不通过的明确标准，"
        "不要写“视情况”“无法判断”之类的模糊说法。G0 和 S 开头的规则不能修改。\n"
        f"只输出一个 JSON 对象，通常只含一两个操作：\n{REFLECTION_SCHEMA}"
    )
    blocks = []
    for i, case in enumerate(cases, start=1):
        verdict = {"pass": "通过", "fail": "不通过", None: "无有效答案"}[case["predicted"]]
        outcome = "判对" if case["correct"] else "判错"
        head = f"案例{i}（模型判定: {verdict}，{outcome}，一致率 {case['agreement']:.2f}）"
        if label_hint:
            head += f"，人工审核结果: {'通过' if case['label'] == 'pass' else '不通过'}"
        summaries = "\n".join(f"  图片{n}: {t}" for n, t in case["summaries"])
        reason = f"\n  模型理由: {case['reason']}" if case.get("reason") else ""
        # train groups only (select_cases): the reviewers' own words for why the group failed
        gt = f"\n  人工不通过原因: {case['gt_fail_reason']}" if case.get("gt_fail_reason") else ""
        blocks.append(f"{head}\n{summaries}{reason}{gt}")
    rejected_block = ""
    if rejected:
        rejected_block = "\n以下修改已被否决，不要再提出：\n" + "\n".join(f"- {r}" for r in rejected)
    user = (
        f"任务「{mission.name}」的当前规则：\n{render_rules(guidance)}\n\n"
        + "\n\n".join(blocks)
        + rejected_block
        + "\n\n请输出 JSON。"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def prompt_hash(messages: list[dict]) -> str:
    payload = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
