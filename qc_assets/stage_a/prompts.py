"""Stage-A prompts: a one-line Chinese summary of what one photo shows for the mission's focus.

system = the summary task + the global "not a site photo" rule; user = instruction + the domain
knowledge block + the mission focus. The hash of both goes into every record's provenance, so a
prompt change is visible and triggers re-summarisation on the next run.
"""

from __future__ import annotations

import hashlib

from qc_assets.missions import Mission

SYSTEM_PROMPT = (
    "你是通信基站安装质检助手。请客观描述照片中可见的设备与安装细节，只写看得到的内容，不做推测。"
    "若照片是图纸、屏幕截图或非现场照片，请直接说明“非现场照片”。"
)

DOMAIN_HINTS = {
    "bbu": "场景提示：BBU安装在室内机柜或挂架上，常见部件有BBU主机、接地线（黄绿色）、电源线、光纤、挡风板、线缆标签。",
    "rru": "场景提示：RRU安装在室外抱杆或墙面上，常见部件有RRU主机、安装支架、紧固件、电源线、光纤、接地线、防水弯和防水胶带。",
}

USER_TEMPLATE = (
    "请用一句中文概括这张照片中与本任务相关的内容。\n"
    "{domain_hint}\n"
    "任务重点：{focus}\n"
    "只输出一行摘要。"
)


def system_prompt() -> str:
    return SYSTEM_PROMPT


def user_prompt(mission: Mission) -> str:
    return USER_TEMPLATE.format(domain_hint=DOMAIN_HINTS[mission.domain], focus=mission.focus)


def prompt_hash(mission: Mission) -> str:
    text = system_prompt() + "\x00" + user_prompt(mission)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
