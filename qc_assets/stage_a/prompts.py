"""Stage-A prompts: a one-line Chinese summary of what one photo shows for the mission's focus.

A prompt profile composes the system and user turns. `summary_runtime` (the default, as the seed's
runtime guide describes it): system = the summary task + the global "not a site photo" rule; user =
instruction + the domain knowledge pack + the mission focus. `summary_terse` asks for a short
phrase, for small models that drift on long instructions.

The domain knowledge packs are text files a QC lead edits (`packs/<domain>.md`); `dataset` picks one
(bbu | rru), overriding the mission's domain. The prompt hash covers the profile, the pack's own
hash and both turns, so editing a pack or switching profile re-summarises on the next run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qc_assets.missions import DOMAINS, Mission

PACKS_DIR = Path(__file__).parent / "packs"
DEFAULT_PROFILE = "summary_runtime"

SYSTEM_PROMPT = (
    "你是通信基站安装质检助手。请客观描述照片中可见的设备与安装细节，只写看得到的内容，不做推测。"
    "若照片是图纸、屏幕截图或非现场照片，请直接说明“非现场照片”。"
)

USER_TEMPLATE = "请用一句中文概括这张照片中与本任务相关的内容。\n{domain_hint}\n任务重点：{focus}\n只输出一行摘要。"

TERSE_SYSTEM = "你是质检助手。只写照片中看得到的内容；图纸或截图写“非现场照片”。"
TERSE_TEMPLATE = "{domain_hint}\n任务重点：{focus}\n用不超过三十字概括照片，只输出一行。"


@dataclass(frozen=True)
class StageAPrompt:
    system: str
    user: str
    profile: str
    dataset: str  # the domain pack used
    pack_sha256: str
    hash: str  # profile + pack hash + both turns


def _runtime(mission: Mission, pack: str) -> tuple[str, str]:
    return SYSTEM_PROMPT, USER_TEMPLATE.format(domain_hint=pack, focus=mission.focus)


def _terse(mission: Mission, pack: str) -> tuple[str, str]:
    return TERSE_SYSTEM, TERSE_TEMPLATE.format(domain_hint=pack, focus=mission.focus)


PROFILES: dict[str, Callable[[Mission, str], tuple[str, str]]] = {
    "summary_runtime": _runtime,
    "summary_terse": _terse,
}


def load_pack(domain: str) -> str:
    """The domain knowledge pack's text; ValueError naming the file when it is missing or empty."""
    if domain not in DOMAINS:
        raise ValueError(f"dataset must be one of {DOMAINS}, got {domain!r}")
    path = PACKS_DIR / f"{domain}.md"
    if not path.is_file():
        raise ValueError(f"domain knowledge pack {path} is missing: restore it (one text file per domain)")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"domain knowledge pack {path} is empty: write the {domain} scene hints into it")
    return text


def build_prompt(mission: Mission, dataset: str | None = None, profile: str = DEFAULT_PROFILE) -> StageAPrompt:
    if profile not in PROFILES:
        raise ValueError(f"prompt_profile must be one of {sorted(PROFILES)}, got {profile!r}")
    domain = dataset or mission.domain
    pack = load_pack(domain)
    pack_sha = hashlib.sha256(pack.encode("utf-8")).hexdigest()
    system, user = PROFILES[profile](mission, pack)
    text = "\x00".join([profile, pack_sha, system, user])
    return StageAPrompt(system, user, profile, domain, pack_sha, hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])


def system_prompt() -> str:
    return SYSTEM_PROMPT


def user_prompt(mission: Mission) -> str:
    """The default profile's user turn for the mission's own domain (what fusion evaluates against)."""
    return build_prompt(mission).user


def prompt_hash(mission: Mission) -> str:
    return build_prompt(mission).hash
