"""`distill_chatml` materialized on a real Dagster instance: with the embedded SmolLM2 teacher (the
default LLMResource), and with the OpenAI-compatible client against the scripted test server, whose
fixed answer makes the corpus predictable enough to check every asset check's verdict."""

import hashlib
import json
import os

import dagster as dg
import polars as pl
import pytest

from qc_assets.distill.assets import DistillAssetConfig, distill_chatml
from qc_assets.distill.checks import asset_checks
from qc_assets.distill.config import DistillConfig
from qc_assets.missions import get_mission
from qc_assets.run_config import to_domain
from qc_assets.stage_b.guidance import Guidance, GuidanceStore
from qc_assets.stage_b.prompts import build_messages
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl, read_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MISSION = get_mission("挡风板安装检查")
OUT = "distill_chatml"
CHECKS = {
    "distill_chatml_schema",
    "distill_chatml_label_agreement",
    "distill_chatml_label_balance",
    "distill_chatml_unique_rows",
}


def write_stage_a(root, n_groups: int = 2) -> list[dict]:
    texts = {"pass": "空槽位挡风板齐全，安装到位", "fail": "两个空槽位缺少挡风板"}
    rows = []
    for i in range(n_groups):
        label = "fail" if i % 2 else "pass"
        rows.append(
            {
                "record_id": f"rid-g{i}",
                "group_id": f"g{i}",
                "mission": MISSION.name,
                "label": label,
                "images": [f"g{i}/1.jpg"],
                "per_image": {"image_1": texts[label]},
                "image_sha256": [hashlib.sha256(f"g{i}".encode()).hexdigest()],
                "model_fingerprint": "test",
                "prompt_hash": "test",
                "decode": {},
            }
        )
    atomic_write_jsonl(root / "stage_a_summaries" / MISSION.name / "records.jsonl", rows)
    return rows


def write_stage_b(root, stop_reason: str = "converged", test_ids: tuple[str, ...] = ()) -> Guidance:
    """G0 + scaffold rules committed through the Stage-B guidance store, pointed at as best, the run's
    result.json (how it stopped) and its split (`test_ids` held out)."""
    atomic_write_jsonl(
        root / "stage_b_guidance" / MISSION.name / "splits.jsonl",
        [{"run_id": "run-0001", "seed": 0, "train": [], "selection": [], "test": list(test_ids)}],
    )
    store = GuidanceStore(root / "stage_b_guidance" / MISSION.name / "guidance")
    guidance = store.commit(Guidance.initial(MISSION), parent=None, change=None)
    store.set_pointer("current", guidance.version)
    store.set_pointer("best", guidance.version)
    (root / "stage_b_guidance" / MISSION.name / "result.json").write_text(
        json.dumps({"run_id": "run-0001", "stop_reason": stop_reason, "kept_version": guidance.version}),
        encoding="utf-8",
    )
    return guidance


def materialize(root, instance, llm: LLMResource, config: DistillAssetConfig):
    return dg.materialize(
        [distill_chatml, *asset_checks],
        partition_key=MISSION.name,
        instance=instance,
        resources={"storage": StorageResource(data_root=str(root)), "teacher_llm": llm},
        run_config=dg.RunConfig({OUT: config}),
        raise_on_error=False,
    )


def checks_of(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_missing_stage_b_guidance_fails_with_a_clear_message(tmp_path):
    write_stage_a(tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, LLMResource(), DistillAssetConfig())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "stage_b_guidance must be materialized first" in failure.step_failure_data.error.message


def test_an_unfinished_stage_b_run_is_refused(tmp_path):
    write_stage_a(tmp_path)
    write_stage_b(tmp_path)
    (tmp_path / "stage_b_guidance" / MISSION.name / "state.json").write_text(
        json.dumps({"run_id": "run-0002", "status": "running", "phase": "rollout"}), encoding="utf-8"
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, LLMResource(), DistillAssetConfig())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "has not finished" in failure.step_failure_data.error.message


def test_bad_run_config_is_refused():
    with pytest.raises(ValueError, match="n_samples"):
        to_domain(DistillAssetConfig(n_samples=0), DistillConfig)


@pytest.mark.parametrize("stop_reason", ["max_epochs", "no_usable_candidate"])
def test_a_stage_b_run_that_did_not_converge_is_refused(tmp_path, stop_reason):
    write_stage_a(tmp_path)
    write_stage_b(tmp_path, stop_reason=stop_reason)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, LLMResource(), DistillAssetConfig())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"did not converge (stop_reason={stop_reason})" in failure.step_failure_data.error.message
    assert "allow_unconverged" in failure.step_failure_data.error.message


def test_a_failed_stage_b_run_is_refused(tmp_path):
    write_stage_a(tmp_path)
    write_stage_b(tmp_path)
    (tmp_path / "stage_b_guidance" / MISSION.name / "state.json").write_text(
        json.dumps({"run_id": "run-0002", "status": "failed", "error": "12 of 12 LLM calls failed"}), encoding="utf-8"
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, LLMResource(), DistillAssetConfig())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "failed (12 of 12 LLM calls failed)" in failure.step_failure_data.error.message


@pytest.mark.slow
def test_materialize_with_the_embedded_teacher_and_rerun_without_calls(tmp_path):
    records = write_stage_a(tmp_path)
    guidance = write_stage_b(tmp_path)
    config = DistillAssetConfig(n_samples=2, max_new_tokens=4, batch_size=4)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, LLMResource(batch_size=4, cpu_threads=1), config)
        assert result.success
        (mat,) = result.asset_materializations_for_node(OUT)
        meta = {k: v.value for k, v in mat.metadata.items()}
        assert meta["distill/answers"] == 4 and meta["distill/teacher_calls"] == 4
        assert meta["guidance_version"] == guidance.version and meta["seed"] == 0
        assert meta["constrained_decoding"] is False
        assert meta["teacher_fingerprint"].startswith("llama_cpp:")  # the CPU default backend
        rejected = sum(v for k, v in meta.items() if k.startswith("distill/rejected_"))
        assert meta["distill/kept_answers"] + rejected == 4
        assert meta["distill/keep_rate"] == meta["distill/kept_answers"] / 4
        assert meta["dagster/row_count"] == meta["distill/rows_pass"] + meta["distill/rows_fail"]
        assert "| reason | answers |" in meta["rejected_by_reason"] and len(meta["preview"]) <= 500
        out = tmp_path / OUT / MISSION.name
        for name in (
            "distill_chatml.jsonl",
            "distill_chatml.parquet",
            "preference_pairs.jsonl",
            "rejected.jsonl",
            "teacher_answers.jsonl",
        ):
            assert (out / name).exists(), name
        assert len(read_jsonl(out / "rejected.jsonl")) == rejected
        rows = read_jsonl(out / "distill_chatml.jsonl")
        by_id = {r["record_id"]: r for r in records}
        for row in rows:  # whatever the tiny model got right: production prompt, label-consistent answer
            assert row["messages"][:2] == build_messages(MISSION, guidance, by_id[row["record_id"]])
        checks = checks_of(result)
        assert set(checks) == CHECKS
        assert checks["distill_chatml_schema"].passed and checks["distill_chatml_unique_rows"].passed
        assert checks["distill_chatml_label_agreement"].passed
        balance = checks["distill_chatml_label_balance"]
        if not rows:  # the honest outcome for a 135M model without constrained decoding
            assert not balance.passed and "empty corpus" in balance.metadata["actual"].value
            assert "empty corpus" in meta["preview"]

        again = materialize(tmp_path, instance, LLMResource(batch_size=4, cpu_threads=1), config)
        assert again.success
        (mat2,) = again.asset_materializations_for_node(OUT)
        assert mat2.metadata["distill/teacher_calls"].value == 0
        assert mat2.metadata["distill/cached_answers"].value == 4
        assert read_jsonl(out / "distill_chatml.jsonl") == rows


def test_scripted_server_teacher_exercises_weighting_pairs_and_every_check(fault_server, tmp_path):
    """The server always answers "通过\\n理由: 螺丝齐全": kept for pass groups, a mismatch for fail groups."""
    fault_server.script("distill-asset", ["ok"])
    write_stage_a(tmp_path, n_groups=4)
    guidance = write_stage_b(tmp_path, stop_reason="max_epochs")  # distilled anyway: the config allows it
    # Stage-B's rollouts under the kept guidance got group g0 (pass) wrong: a hard case.
    atomic_write_jsonl(
        tmp_path / "stage_b_guidance" / MISSION.name / "trajectories.jsonl",
        [
            {
                "guidance_hash": guidance.content_hash(),
                "record_id": "rid-g0",
                "label": "pass",
                "verdict": "fail",
                "error": None,
            }
        ],
    )
    llm = LLMResource(backend="openai", base_url=fault_server.base_url, model="distill-asset", max_retries=0)
    config = DistillAssetConfig(n_samples=2, hard_fail_groups=False, allow_unconverged=True)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION.name])
        result = materialize(tmp_path, instance, llm, config)
    assert result.success
    (mat,) = result.asset_materializations_for_node(OUT)
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["distill/allow_unconverged"] is True and meta["distill/stage_b_converged"] is False
    assert meta["distill/stage_b_stop_reason"] == "max_epochs"
    # 2 pass groups x 2 identical samples: one kept each + one duplicate; fail groups: mismatches.
    assert meta["distill/kept_answers"] == 2 and meta["distill/rejected_duplicate_answer"] == 2
    assert meta["distill/rejected_label_mismatch"] == 4 and meta["distill/keep_rate"] == 2 / 8
    assert meta["distill/hard_groups"] == 1 and meta["distill/majority_wrong_groups"] == 1
    frame = pl.read_parquet(tmp_path / OUT / MISSION.name / "distill_chatml.parquet")
    # one row per kept answer; g0 is marked hard, and the fusion config's hard_case_factor weighs it
    assert sorted(frame.select("group_id", "copy", "hard_case").rows()) == [("g0", 0, True), ("g2", 0, False)]
    assert meta["dagster/row_count"] == 2 and meta["distill/preference_pairs"] == 0  # no group has both
    checks = checks_of(result)
    assert all(checks[name].passed for name in CHECKS - {"distill_chatml_label_balance"})
    balance = checks["distill_chatml_label_balance"]
    assert not balance.passed and balance.metadata["actual_fail_share"].value == 0.0
    assert checks["distill_chatml_label_agreement"].metadata["actual_agreement"].value == 1.0
    summary = json.loads((tmp_path / OUT / MISSION.name / "summary.json").read_text(encoding="utf-8"))
    assert summary["label_counts"] == {"pass": 2, "fail": 0}
