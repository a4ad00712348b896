"""The mission registry: what each inspection mission checks, in the inspectors' own words.

A mission's name is its partition key and its folder name under the images root, written exactly as
production writes it (Chinese, full-width brackets). Extra missions can be registered from a YAML
file named by `QC_MISSIONS_FILE` without code changes (see `configs/missions.example.yaml`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml

from resources.env import env
from resources.vlm import MIN_MAX_PIXELS

DOMAINS = ("bbu", "rru")
# Image budget per photo (pixels the VLM sees at most; Qwen3-VL spends one visual token per 32x32
# pixels). RRU photos are taken from the ground or a distance and the equipment is small in the
# frame, so they get twice the BBU budget: 1024 vs 2048 visual tokens.
DEFAULT_MAX_PIXELS = {"bbu": 1024 * 32 * 32, "rru": 2048 * 32 * 32}


@dataclass(frozen=True)
class Mission:
    name: str
    domain: str  # "bbu" | "rru": selects the domain knowledge block of the prompts
    focus: str  # what an inspector checks; becomes guidance rule G0
    scaffold_rules: tuple[str, ...] = ()  # immutable rules S1..Sk every guidance version starts with
    max_pixels: int | None = None  # Stage-A image budget; None = DEFAULT_MAX_PIXELS of the domain

    def __post_init__(self) -> None:
        validate_mission_name(self.name)
        if self.domain not in DOMAINS:
            raise ValueError(f"mission {self.name!r}: domain must be one of {DOMAINS}, got {self.domain!r}")
        if not self.focus.strip():
            raise ValueError(f"mission {self.name!r}: focus text is empty")
        if self.max_pixels is None:
            object.__setattr__(self, "max_pixels", DEFAULT_MAX_PIXELS[self.domain])  # frozen: set once here
        if not isinstance(self.max_pixels, int) or self.max_pixels < MIN_MAX_PIXELS:
            raise ValueError(
                f"mission {self.name!r}: max_pixels must be an integer >= {MIN_MAX_PIXELS} "
                f"(one visual token), got {self.max_pixels!r}"
            )


def validate_mission_name(name: str) -> str:
    """Refuse names that are unsafe as a folder name or partition key."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"mission name must be a non-empty string, got {name!r}")
    if name != name.strip():
        raise ValueError(f"mission name {name!r} has leading or trailing whitespace")
    if "/" in name or "\\" in name:
        raise ValueError(f"mission name {name!r} contains a path separator")
    if name in (".", "..") or ".." in name:
        raise ValueError(f"mission name {name!r} contains '..'")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise ValueError(f"mission name {name!r} contains control characters")
    return name


_COMMON_SCAFFOLD = (
    "只依据照片摘要中明确描述的内容判断，摘要未提及的部件不能视为合格证据。",
    "若摘要显示照片为图纸、截图或非现场照片，该组判为不通过。",
)

_BUILTIN = [
    Mission(
        "BBU安装方式检查（正装）",
        "bbu",
        "BBU设备须正装固定在机柜或挂架上：安装方向正确，螺丝齐全紧固，设备无倾斜、无悬空。",
        _COMMON_SCAFFOLD,
    ),
    Mission(
        "BBU接地线检查",
        "bbu",
        "BBU须有黄绿色接地线，一端可靠连接设备接地端子，另一端连接接地排；接地线无断开、无缺失。",
        _COMMON_SCAFFOLD,
    ),
    Mission(
        "BBU线缆布放要求",
        "bbu",
        "BBU线缆须整齐布放、绑扎固定，弯曲半径合理，无交叉缠绕、无悬垂，标签清晰。",
        _COMMON_SCAFFOLD,
    ),
    Mission(
        "挡风板安装检查",
        "bbu",
        "机柜空槽位须安装挡风板，挡风板齐全、安装到位，无缺失、无松动。",
        _COMMON_SCAFFOLD,
    ),
    Mission(
        "RRU安装检查",
        "rru",
        "RRU须牢固安装在抱杆或墙面支架上，紧固件齐全，设备垂直无倾斜，防水处理到位。",
        _COMMON_SCAFFOLD,
    ),
    Mission(
        "RRU位置检查",
        "rru",
        "RRU安装位置须符合设计：与天线距离合理，便于维护，周围无遮挡物和安全隐患。",
        _COMMON_SCAFFOLD,
    ),
    Mission(
        "RRU线缆",
        "rru",
        "RRU的电源线、光纤和接地线须连接可靠，线缆有固定和防水弯，接头做好防水密封。",
        _COMMON_SCAFFOLD,
    ),
]

MISSIONS: dict[str, Mission] = {m.name: m for m in _BUILTIN}


def load_missions_file(path: str | Path) -> list[Mission]:
    """Read extra missions from YAML: a list of {name, domain, focus, scaffold_rules?, max_pixels?}."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of missions, got {type(raw).__name__}")
    missions = []
    for i, item in enumerate(raw):
        missing = {"name", "domain", "focus"} - set(item or {})
        if missing:
            raise ValueError(f"{path}: mission #{i} lacks {sorted(missing)}")
        rules = item.get("scaffold_rules", list(_COMMON_SCAFFOLD))
        missions.append(Mission(item["name"], item["domain"], item["focus"], tuple(rules), item.get("max_pixels")))
    return missions


def all_missions() -> dict[str, Mission]:
    """Built-in missions plus those from QC_MISSIONS_FILE (which may override a built-in by name)."""
    missions = dict(MISSIONS)
    extra = env("QC_MISSIONS_FILE", "")
    if extra:
        missions.update({m.name: m for m in load_missions_file(extra)})
    return missions


def get_mission(name: str) -> Mission:
    validate_mission_name(name)
    missions = all_missions()
    if name not in missions:
        raise ValueError(f"unknown mission {name!r}; registered: {sorted(missions)}")
    return missions[name]
