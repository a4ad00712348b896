"""Test helpers for the production verdicts.

`ScriptedVerdictLLM` is a TEST DOUBLE: a `ChatLLM` that returns prepared answers, because the only
real LLM that runs here (SmolLM2-135M) cannot be steered into a given verdict, and the verdict logic
(majority, agreement, format and provider failures) needs deterministic answers to be tested.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from qc_assets.missions import get_mission
from qc_assets.stage_a.records import record_id
from qc_assets.stage_b.guidance import Guidance, GuidanceStore, RuleOp
from resources.llm import Completion, DecodeParams

MISSION = "BBU接地线检查"
PASS = "通过\n理由: 接地线连接可靠"
FAIL = "不通过\n理由: 缺少接地线"
BROKEN = "通过了吧"
PROVIDER_DOWN = None  # in a script: this sample's request fails


class ScriptedVerdictLLM:
    """Test double of a ChatLLM: for a conversation whose user message names a scripted token, the i-th
    request for that token returns `script[token][i % len]` (None = a failed request)."""

    def __init__(self, script: dict[str, Sequence[str | None]], fingerprint: str = "scripted-llm-v1"):
        self.script = {k: list(v) for k, v in script.items()}
        self._fingerprint = fingerprint
        self.calls = 0
        self.seen: Counter = Counter()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def chat(self, conversations, params: DecodeParams) -> list[list[Completion]]:
        out = []
        for conv in conversations:
            user = conv[-1]["content"]
            token = next(t for t in self.script if t in user)
            answer = self.script[token][self.seen[token] % len(self.script[token])]
            self.seen[token] += 1
            self.calls += 1
            if answer is None:
                out.append([Completion(text=None, finish_reason="error", error="HTTP 503 from provider")])
            else:
                out.append([Completion(text=answer, prompt_tokens=10, completion_tokens=5)])
        return out


def inbox_record(group_id: str, sha: str = "a" * 64, mission: str = MISSION, truncated: bool = False) -> dict:
    """An inbox record whose summary names the group id, so ScriptedVerdictLLM can find its script.
    `truncated`: its one summary was cut at max_new_tokens (finish_reason "length")."""
    return {
        "group_id": group_id,
        "mission": mission,
        "label": None,
        "images": [f"待审核/{group_id}/1.jpg"],
        "per_image": {"image_1": f"机柜照片，组{group_id}"},
        "record_id": record_id(mission, None, group_id),
        "image_sha256": [sha],
        "truncated_images": int(truncated),
        "truncated_keys": ["image_1"] if truncated else [],
    }


def guidance_versions(mission_name: str = MISSION) -> tuple[Guidance, Guidance]:
    """Version 0 (initial) and a version 1 with one learned rule, as stored Guidance objects."""
    mission = get_mission(mission_name)
    g0 = Guidance.initial(mission)
    g1 = g0.apply(RuleOp("add", text="接地线须为黄绿色。"), epoch=1)
    return g0, g1


def store_kept_guidance(data_root, guidance: Guidance, parent: int | None = None) -> Guidance:
    """Commit `guidance` under `<data_root>/stage_b_guidance/<mission>/guidance` and point `best` at it."""
    store = GuidanceStore(data_root / "stage_b_guidance" / guidance.mission / "guidance")
    stored = store.commit(guidance, parent=parent, change=None)
    store.set_pointer("best", stored.version)
    return stored
