"""The learning loop end to end on the real embedded SmolLM2 (transformers, CPU), tiny data."""

import json
import os
from collections import Counter

import pytest

from qc_assets.missions import Mission
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.guidance import load_guidance
from qc_assets.stage_b.loop import run_stage_b
from resources.store import read_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A short mission text keeps the prompts (and the CPU time of this test) small.
MISSION = Mission("挡风板安装检查", "bbu", "空槽位须装挡风板。", ("只看摘要。",))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2():
    from resources.llm.smollm2 import smollm2_gguf_path
    from resources.llm.transformers_backend import TransformersChatLLM

    gguf = smollm2_gguf_path()
    # One torch thread: on a shared 2-core box two threads per process oversubscribe the CPU.
    return TransformersChatLLM(gguf.parent, gguf_file=gguf.name, batch_size=4, num_threads=1)


def tiny_records() -> list[dict]:
    rows = [
        ("g01", "fail", "空槽位未装挡风板"),
        ("g02", "pass", "挡风板齐全"),
        ("g03", "pass", "挡风板齐全到位"),
        ("g04", "fail", "挡风板松动"),
        ("g05", "fail", "缺两块挡风板"),
        ("g05", "pass", "已补装挡风板"),
    ]
    return [
        {
            "record_id": f"r{i}",
            "group_id": gid,
            "mission": MISSION.name,
            "label": label,
            "images": ["a.jpg"],
            "per_image": {"image_1": text},
        }
        for i, (gid, label, text) in enumerate(rows)
    ]


CONFIG = StageBLoopConfig(
    epochs=1,
    decode_grid=((0.0, 1.0),),
    samples=1,
    max_new_tokens=8,
    constrained=False,
    rollout_batch_size=2,
    reflection_max_new_tokens=24,
    reflection_temperature=0.0,
    reflection_batch_size=2,
    rounds_per_epoch=1,
    bootstrap_samples=200,
)


class CrashAfter:
    """The real model, made to die on its n-th chat call, as a killed worker would."""

    def __init__(self, llm, n: int) -> None:
        self.llm, self.n, self.calls = llm, n, 0

    @property
    def fingerprint(self) -> str:
        return self.llm.fingerprint

    def chat(self, conversations, params):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("simulated crash")
        return self.llm.chat(conversations, params)


def keys(path) -> list[tuple]:
    return [tuple(r["key"]) for r in read_jsonl(path) if r["error"] is None]


def test_loop_artifacts_crash_resume_and_rerun(smollm2, tmp_path):
    out = tmp_path / "stage_b_guidance" / MISSION.name
    records = tiny_records()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_stage_b(records, MISSION, CrashAfter(smollm2, n=2), CONFIG, out, log=lambda _: None)
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    assert state["status"] == "running" and state["run_id"] == "run-0001"
    before = keys(out / "trajectories.jsonl")
    assert len(before) == 2  # one finished batch survived the crash

    # Resume: same run id, the two finished rollouts are not asked again.
    result = run_stage_b(records, MISSION, smollm2, CONFIG, out, log=lambda _: None)
    assert result.resumed and result.run_id == "run-0001"
    after = keys(out / "trajectories.jsonl")
    assert len(after) == len(set(after)), "a rollout was generated twice"
    assert after[:2] == before
    assert result.counts["rollout_calls"] == len(after) - len(before) >= 4
    assert result.counts["reflection_calls"] == 1
    assert result.counts["llm_calls"] == result.counts["rollout_calls"] + 1

    # Artifacts.
    traj = read_jsonl(out / "trajectories.jsonl")
    assert {r["record_id"] for r in traj} == {r["record_id"] for r in records}
    assert all(
        {"epoch", "raw", "verdict", "reason", "format_ok", "correct", "seed", "temperature"} <= set(r) for r in traj
    )
    selections = read_jsonl(out / "selections.jsonl")
    split = result.split_sizes
    assert Counter(s["pool"] for s in selections) == Counter(
        {"train": split["train_records"], "selection": split["selection_records"]}
    )
    assert split["test_records"] == 0 and result.test["verdict"] == "inconclusive"  # too few groups
    # what distill_chatml's `source: selections` needs to check the selected answer against the teacher
    for s in selections:
        if s["selected"] is not None:
            assert s["selected"]["model"] == smollm2.fingerprint and s["selected"]["finish_reason"]
            assert "regex" in s["selected"]
    candidates = read_jsonl(out / "rule_candidates.jsonl")
    assert candidates and all(c["decision"] for c in candidates)
    (metrics,) = read_jsonl(out / "metrics.jsonl")
    assert metrics["llm_calls"] == result.counts["llm_calls"] and 0 <= metrics["train_format_ok_rate"] <= 1
    assert (out / "guidance" / "v0000.json").exists()
    assert load_guidance(out, "best").version == result.kept_version
    assert result.kept_selection_accuracy >= result.baseline_selection_accuracy
    assert result.stop_reason in ("converged", "max_epochs", "no_usable_candidate", "nothing_to_reflect")
    assert json.loads((out / "state.json").read_text(encoding="utf-8"))["status"] == "completed"

    # A torn write: cut the log mid-line. Only the lost rollouts are redone, in a new run.
    data = (out / "trajectories.jsonl").read_bytes()
    (out / "trajectories.jsonl").write_bytes(data[: len(data) * 2 // 3])
    kept = keys(out / "trajectories.jsonl")
    lost = len(set(after) - set(kept))
    assert lost >= 1
    again = run_stage_b(records, MISSION, smollm2, CONFIG, out, log=lambda _: None)
    assert not again.resumed and again.run_id == "run-0002"
    assert again.counts["rollout_calls"] >= lost
    assert set(after) <= set(keys(out / "trajectories.jsonl"))

    # A finished run re-run on the same out_dir asks the model nothing and deletes nothing.
    rows_before = {
        name: len(read_jsonl(out / name))
        for name in ("trajectories.jsonl", "selections.jsonl", "rule_candidates.jsonl", "metrics.jsonl")
    }
    third = run_stage_b(records, MISSION, smollm2, CONFIG, out, log=lambda _: None)
    assert third.counts["llm_calls"] == 0 and third.run_id == "run-0003"
    assert third.kept_version == again.kept_version
    assert len(read_jsonl(out / "trajectories.jsonl")) == rows_before["trajectories.jsonl"]
    for name in ("selections.jsonl", "metrics.jsonl"):
        assert len(read_jsonl(out / name)) > rows_before[name]  # appended under the new run id
    assert [h["run_id"] for h in json.loads((out / "state.json").read_text(encoding="utf-8"))["history"]] == [
        "run-0001",
        "run-0002",
    ]
