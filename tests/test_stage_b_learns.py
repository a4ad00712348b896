"""The loop learns when the model can: the real loop and the real OpenAI-compatible client against
`ScriptedRuleFollowingServer`, a named test double (a rule-following student, a scripted reflector)."""

import json
from dataclasses import replace

import pytest
from support.stage_b_data import CORRECT, HARMFUL, MISSION, USELESS, keyword_records

from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.stage_b.guidance import GuidanceStore, load_guidance
from qc_assets.stage_b.loop import ProviderFailureError, run_stage_b
from qc_assets.stage_b.reflection import REFLECTION_JSON_SCHEMA
from resources.store import read_jsonl

CONFIG = StageBLoopConfig(
    epochs=3,
    decode_grid=((0.0, 1.0),),
    samples=1,
    constrained=False,
    rounds_per_epoch=2,
    max_candidates_per_round=2,
    bootstrap_samples=200,
    min_test_groups=8,
)


def quiet(_msg: str) -> None:
    return None


def decisions(out) -> list[tuple[str, str | None]]:
    return [(c["decision"], (c.get("op") or {}).get("text")) for c in read_jsonl(out / "rule_candidates.jsonl")]


def test_correct_rule_is_proposed_gated_committed_and_kept(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [CORRECT]}, {"operations": [USELESS]}, {"operations": [HARMFUL]}])
    out = tmp_path / "stage_b"
    result = run_stage_b(
        keyword_records(n_groups=80),
        MISSION,
        scripted_server.client(),
        replace(CONFIG, min_test_groups=20),
        out,
        log=quiet,
    )

    assert ("accepted", CORRECT["text"]) in decisions(out)
    kept = load_guidance(out, "best")
    assert kept.version == result.kept_version == 1 and CORRECT["text"] in [it.text for it in kept.items]
    stats = result.version_stats
    assert stats[1]["selection_accuracy"] > stats[0]["selection_accuracy"]
    # Useless and harmful edits were gated and refused; then an epoch gated and accepted nothing.
    assert ("rejected", USELESS["text"]) in decisions(out) and ("rejected", HARMFUL["text"]) in decisions(out)
    assert result.stop_reason == "converged" and result.converged
    # Test is read once, at the end, and is big enough here to conclude.
    test = result.test
    assert test["conclusive"] and test["verdict"] == "better", test
    assert test["kept_accuracy"] - test["baseline_accuracy"] >= 0.3 and test["ci_low"] > 0
    test_ids = set(read_jsonl(out / "splits.jsonl")[-1]["test"])
    phases = {r["phase"] for r in read_jsonl(out / "trajectories.jsonl") if r["record_id"] in test_ids}
    assert phases == {"test"}, "a test record reached the model outside the final test read"
    reflected = {
        c
        for p in scripted_server.reflection_payloads
        for c in test_ids
        if c.split("/")[-1] in p["messages"][1]["content"]
    }
    assert not reflected, "the reflector saw test groups"
    assert result.counts["failed_calls"] == 0


def test_harmful_rule_is_rejected_remembered_and_not_gated_again(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [HARMFUL]}, {"operations": [HARMFUL, CORRECT]}])
    out = tmp_path / "stage_b"
    result = run_stage_b(keyword_records(), MISSION, scripted_server.client(), CONFIG, out, log=quiet)

    rows = read_jsonl(out / "rule_candidates.jsonl")
    harmful = [r for r in rows if (r.get("op") or {}).get("text") == HARMFUL["text"]]
    assert harmful[0]["decision"] == "rejected"
    assert harmful[0]["gate"]["broken"] > 0  # it fails good groups
    assert {r["decision"] for r in harmful[1:]} == {"filtered"}
    assert {r["reason"] for r in harmful[1:]} == {"previously_rejected"}
    assert sum(r["decision"] in ("rejected", "accepted", "vetoed") for r in harmful) == 1, "gated twice"
    # The reflector is told which edit was refused.
    assert HARMFUL["text"] in scripted_server.reflection_payloads[1]["messages"][1]["content"]
    assert ("accepted", CORRECT["text"]) in decisions(out)
    store = GuidanceStore(out / "guidance")
    assert store.versions() and result.kept_version in store.versions()
    for version in store.versions():
        assert HARMFUL["text"] not in [it.text for it in store.load(version).items]


def test_edited_mission_text_on_the_same_data_root_does_not_crash(scripted_server, tmp_path):
    """Regression: the result read version_stats[0], but edited focus text starts at a later version."""
    out = tmp_path / "stage_b"
    records = keyword_records(n_groups=12)
    config = StageBLoopConfig(
        epochs=1, decode_grid=((0.0, 1.0),), samples=1, constrained=False, rounds_per_epoch=1, bootstrap_samples=100
    )
    first = run_stage_b(records, MISSION, scripted_server.client(), config, out, log=quiet)
    assert first.baseline_version == 0
    edited = type(MISSION)(MISSION.name, MISSION.domain, "空槽位必须安装挡风板。", MISSION.scaffold_rules)
    second = run_stage_b(records, edited, scripted_server.client(), config, out, log=quiet)
    assert second.baseline_version > first.current_version
    assert load_guidance(out, "best").get("G0").text == edited.focus
    assert json.loads((out / "result.json").read_text(encoding="utf-8"))["baseline_version"] == second.baseline_version


@pytest.mark.parametrize(
    "replies, cause",
    [
        (["这不是 JSON"], "invalid JSON"),
        ([{"operations": [{"op": "add", "text": "<新规则>"}]}], "every candidate filtered"),
    ],
)
def test_no_usable_candidate_is_not_convergence(scripted_server, tmp_path, replies, cause):
    scripted_server.script_reflector(replies)
    result = run_stage_b(
        keyword_records(n_groups=16), MISSION, scripted_server.client(), CONFIG, tmp_path / "stage_b", log=quiet
    )
    assert result.stop_reason == "no_usable_candidate" and not result.converged, cause
    assert result.gated_candidates == 0 and result.kept_version == result.baseline_version


def test_stopping_at_max_epochs_while_accepting_is_not_convergence(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [CORRECT]}])
    config = StageBLoopConfig(
        epochs=1, decode_grid=((0.0, 1.0),), samples=1, constrained=False, rounds_per_epoch=1, bootstrap_samples=200
    )
    result = run_stage_b(keyword_records(), MISSION, scripted_server.client(), config, tmp_path / "b", log=quiet)
    assert result.accepted_edits == 1 and result.stop_reason == "max_epochs" and not result.converged


def test_an_outage_fails_the_run_instead_of_reading_as_converged(scripted_server, tmp_path):
    scripted_server.outage = True
    out = tmp_path / "stage_b"
    with pytest.raises(ProviderFailureError, match=r"LLM calls failed") as info:
        run_stage_b(keyword_records(n_groups=12), MISSION, scripted_server.client(), CONFIG, out, log=quiet)
    assert info.value.counts["failed_calls"] == info.value.counts["llm_calls"] > 0
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    assert state["status"] == "failed" and state["counts"]["failed_calls"] > 0
    assert not (out / "result.json").exists()


def test_failures_under_the_threshold_are_counted_and_the_run_goes_on(scripted_server, tmp_path):
    scripted_server.fail_student_requests = 1
    config = StageBLoopConfig(
        epochs=1,
        decode_grid=((0.0, 1.0),),
        samples=1,
        constrained=False,
        rounds_per_epoch=1,
        bootstrap_samples=100,
        max_provider_failure_rate=0.1,
    )
    result = run_stage_b(keyword_records(), MISSION, scripted_server.client(), config, tmp_path / "b", log=quiet)
    assert result.counts["failed_calls"] == result.counts["failed_rollout_calls"] == 1
    errors = [r for r in read_jsonl(tmp_path / "b" / "trajectories.jsonl") if r["error"] is not None]
    assert len(errors) == 1 and "HTTP 400" in errors[0]["error"]


def test_reflection_json_schema_reaches_the_server_as_response_format(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [CORRECT]}])
    config = StageBLoopConfig(
        epochs=1,
        decode_grid=((0.0, 1.0),),
        samples=1,
        constrained=False,
        rounds_per_epoch=1,
        bootstrap_samples=100,
        reflection_json_schema=True,
    )
    run_stage_b(keyword_records(n_groups=12), MISSION, scripted_server.client(), config, tmp_path / "b", log=quiet)
    (payload,) = scripted_server.reflection_payloads
    assert payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": REFLECTION_JSON_SCHEMA, "strict": True},
    }
    assert all("response_format" not in p for p in scripted_server.student_payloads)
