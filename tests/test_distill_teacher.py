"""The teacher run on real backends: the embedded SmolLM2 (resumable: a re-run makes zero calls) and
the OpenAI-compatible client against the scripted fault server (a failed request is recorded as
`teacher_error`, never scored, and retried by the next run)."""

import hashlib

import pytest

from qc_assets.distill.config import DistillConfig
from qc_assets.distill.pipeline import run_distill
from qc_assets.distill.teacher import ANSWERS_FILE, run_teacher, sample_seed
from qc_assets.missions import get_mission
from qc_assets.stage_b.guidance import Guidance
from resources.llm.openai_backend import OpenAIChatLLM
from resources.store import read_jsonl

MISSION = get_mission("挡风板安装检查")
GUIDANCE = Guidance.initial(MISSION)


class CountingLLM:
    """Wraps a real ChatLLM and counts the completions it is asked for."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.completions = 0

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def chat(self, conversations, params):
        self.completions += len(conversations) * params.n
        return self.inner.chat(conversations, params)


def records(n: int) -> list[dict]:
    texts = {"pass": "空槽位挡风板齐全，安装到位", "fail": "两个空槽位缺少挡风板"}
    out = []
    for i in range(n):
        label = "fail" if i % 2 else "pass"
        out.append(
            {
                "record_id": f"rid{i}",
                "group_id": f"g{i}",
                "mission": MISSION.name,
                "label": label,
                "images": [f"g{i}/1.jpg"],
                "per_image": {"image_1": texts[label]},
                "image_sha256": [hashlib.sha256(f"g{i}".encode()).hexdigest()],
            }
        )
    return out


def test_sample_seeds_are_distinct_and_stable():
    seeds = [sample_seed(7, i) for i in range(4)]
    assert len(set(seeds)) == 4 and seeds == [sample_seed(7, i) for i in range(4)]
    assert sample_seed(8, 0) != seeds[0]


@pytest.mark.slow
def test_rerun_makes_zero_teacher_calls_with_the_embedded_model(smollm2_llm, tmp_path):
    config = DistillConfig(n_samples=2, max_new_tokens=4, batch_size=4)
    counting = CountingLLM(smollm2_llm)
    recs = records(2)
    first = run_teacher(counting, MISSION, GUIDANCE, recs, config, tmp_path, log=lambda _: None)
    assert counting.completions == first.teacher_calls == 4 and first.cached == 0
    assert [(a["record_id"], a["sample"]) for a in first.answers] == [(f"rid{i}", s) for i in range(2) for s in (0, 1)]
    assert {a["seed"] for a in first.answers} == {sample_seed(0, 0), sample_seed(0, 1)}
    assert all(a["raw"] is not None and a["error"] is None for a in first.answers)
    again = run_teacher(counting, MISSION, GUIDANCE, recs, config, tmp_path, log=lambda _: None)
    assert counting.completions == 4 and again.teacher_calls == 0 and again.cached == 4
    assert [a["raw"] for a in again.answers] == [a["raw"] for a in first.answers]
    # A new group needs new calls, only for that group.
    more = run_teacher(counting, MISSION, GUIDANCE, records(3), config, tmp_path, log=lambda _: None)
    assert more.teacher_calls == 2 and more.cached == 4 and counting.completions == 6
    assert len(read_jsonl(tmp_path / ANSWERS_FILE)) == 6


def test_cache_key_covers_decode_params_and_guidance(tmp_path):
    """Changing the decode params or the guidance must not reuse answers (checked on the key alone)."""
    from qc_assets.distill.teacher import TeacherRunner

    client = OpenAIChatLLM("http://127.0.0.1:9/v1", "teacher")  # never called: only its fingerprint is read
    rec, msgs = records(1)[0], [{"role": "user", "content": "x"}]
    base = TeacherRunner(client, MISSION, GUIDANCE, DistillConfig(), tmp_path).key(rec, msgs, 0)
    for config in (
        DistillConfig(temperature=0.9),
        DistillConfig(top_p=0.5),
        DistillConfig(max_new_tokens=9),
        DistillConfig(seed=1),
        DistillConfig(constrained=True),
    ):
        assert TeacherRunner(client, MISSION, GUIDANCE, config, tmp_path).key(rec, msgs, 0) != base
    newer = Guidance.from_dict({**GUIDANCE.to_dict(), "version": 3})
    assert TeacherRunner(client, MISSION, newer, DistillConfig(), tmp_path).key(rec, msgs, 0) != base
    assert TeacherRunner(client, MISSION, GUIDANCE, DistillConfig(), tmp_path).key(rec, msgs, 1) != base


def test_failed_requests_are_rejected_as_teacher_error_and_retried_next_run(fault_server, tmp_path):
    fault_server.script("distill-flaky", ["500", "500", "ok"])
    llm = OpenAIChatLLM(fault_server.base_url, "distill-flaky", max_retries=0, max_in_flight=1)
    config = DistillConfig(n_samples=1, batch_size=2)
    recs = records(2)
    first = run_distill(recs, MISSION, GUIDANCE, llm, config, tmp_path / "out", log=lambda _: None)
    assert first.rejected["teacher_error"] == 2 and first.kept_answers == 0 and first.rows == []
    logged = read_jsonl(tmp_path / "out" / ANSWERS_FILE)
    assert [r["raw"] for r in logged] == [None, None] and all(r["error"] for r in logged)
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert {r["reason"] for r in rejected} == {"teacher_error"} and all(r["verdict"] is None for r in rejected)
    # The server's canned answer is "通过\n理由: 螺丝齐全": kept for the pass group, a mismatch for the fail one.
    second = run_distill(recs, MISSION, GUIDANCE, llm, config, tmp_path / "out", log=lambda _: None)
    assert second.teacher_run.teacher_calls == 2 and second.rejected["teacher_error"] == 0
    assert second.kept_answers == 1 and second.rejected["label_mismatch"] == 1
    assert [r["label"] for r in second.rows] == ["pass"]
