"""QC_<ROLE>_TIMEOUT_S / QC_<ROLE>_MAX_RETRIES (the LLM roles and QC_VLM_) reach the HTTP client,
against `FaultInjectionServer`, a real test-only HTTP server on 127.0.0.1 that answers slowly (1.5 s)
when scripted to."""

from __future__ import annotations

import pytest
from support.stage_b_data import MISSION, keyword_records

from definitions import llm_from_env
from qc_assets.stage_b.guidance import Guidance
from qc_assets.stage_b.rollout import PlanEntry, RolloutEngine
from resources.doubles.llm_servers import OK_TEXT
from resources.llm import DecodeParams

QUESTION = [[{"role": "user", "content": "slow?"}]]


def teacher_env(monkeypatch, server, model: str, timeout_s: str, retries: str) -> None:
    for name, value in {
        "BACKEND": "openai",
        "BASE_URL": server.base_url,
        "MODEL": model,
        "TIMEOUT_S": timeout_s,
        "MAX_RETRIES": retries,
    }.items():
        monkeypatch.setenv(f"QC_TEACHER_{name}", value)


def test_a_short_timeout_fails_a_slow_server_after_the_configured_retries(monkeypatch, fault_server):
    fault_server.script("slow-always", ["timeout"])  # every answer takes 1.5 s
    teacher_env(monkeypatch, fault_server, "slow-always", "0.4", "2")
    resource = llm_from_env("QC_TEACHER")
    assert (resource.timeout_s, resource.max_retries) == (0.4, 2)
    ((completion,),) = resource.get_llm().chat(QUESTION, DecodeParams(seed=3))
    assert not completion.ok and completion.error == "timeout after 0.4s"
    assert completion.extra["attempts"] == 3
    assert fault_server.hits["slow-always"] == 3  # 1 try + 2 retries, as configured


def test_a_long_enough_timeout_waits_for_the_slow_answer(monkeypatch, fault_server):
    fault_server.script("slow-ok", ["timeout"])
    teacher_env(monkeypatch, fault_server, "slow-ok", "5", "0")
    ((completion,),) = llm_from_env("QC_TEACHER").get_llm().chat(QUESTION, DecodeParams(seed=3))
    assert completion.ok and completion.text == OK_TEXT
    assert completion.extra["attempts"] == 1 and completion.latency_s >= 1.4
    assert fault_server.hits["slow-ok"] == 1


def test_stage_b_counts_the_retries_of_a_slow_server(monkeypatch, fault_server, tmp_path):
    # the first request hangs past the 0.5 s timeout and is retried; the rest answer at once
    fault_server.script("flaky", ["timeout", "ok"])
    teacher_env(monkeypatch, fault_server, "flaky", "0.5", "2")
    engine = RolloutEngine(
        llm=llm_from_env("QC_TEACHER").get_llm(),
        mission=MISSION,
        out_dir=tmp_path,
        plan=[PlanEntry(0.0, 1.0, 0, 11)],
        max_new_tokens=16,
        constrained=False,
        run_id="r1",
        log=lambda _: None,
    )
    rows = engine.rollout(Guidance.initial(MISSION), keyword_records(n_groups=3, noisy=0), epoch=0, phase="train")
    attempts = sorted(r["attempts"] for rs in rows.values() for r in rs)
    assert attempts == [1, 1, 2]
    assert engine.counter.snapshot()["retries"] == 1 and engine.counter.failed_calls == 0


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("QC_LLM_TIMEOUT_S", "soon", "QC_LLM_TIMEOUT_S must be a number, got 'soon'"),
        ("QC_LLM_MAX_RETRIES", "2.5", "QC_LLM_MAX_RETRIES must be an integer, got '2.5'"),
    ],
)
def test_a_malformed_timeout_or_retry_count_names_its_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        llm_from_env("QC_LLM")


def test_defaults_are_the_sdk_sized_ones(monkeypatch):
    for name in ("QC_LLM_TIMEOUT_S", "QC_LLM_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    llm = llm_from_env("QC_LLM")
    assert (llm.timeout_s, llm.max_retries) == (60.0, 3)


def test_the_vlm_timeout_and_retries_come_from_the_environment(monkeypatch, fault_server, tmp_path):
    from PIL import Image

    from resources.vlm import VisionDecode, VisionPrompt, VLMRequestError
    from resources.vlm.resource import vlm_from_env

    image = tmp_path / "1.jpg"
    Image.new("RGB", (32, 32), (120, 60, 30)).save(image)
    prompt = [VisionPrompt(str(image), "系统", "描述这张图片。")]
    fault_server.script("vlm-slow", ["timeout"])  # every answer takes 1.5 s
    for name, value in {
        "BACKEND": "openai",
        "BASE_URL": fault_server.base_url,
        "SERVED_MODEL": "vlm-slow",
        "TIMEOUT_S": "0.4",
        "MAX_RETRIES": "1",
    }.items():
        monkeypatch.setenv(f"QC_VLM_{name}", value)
    with pytest.raises(VLMRequestError, match="1 of 1 VLM requests failed"):
        vlm_from_env().get_vlm().generate(prompt, VisionDecode(max_new_tokens=4))
    assert fault_server.hits["vlm-slow"] == 2  # 1 try + 1 retry
    monkeypatch.setenv("QC_VLM_TIMEOUT_S", "5")
    (out,) = vlm_from_env().get_vlm().generate(prompt, VisionDecode(max_new_tokens=4))
    # the VLM interface answers one line of text (resources/vlm: "one line of text out")
    assert out.text == OK_TEXT.replace("\n", " ") and fault_server.hits["vlm-slow"] == 3  # waited for it
