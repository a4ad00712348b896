"""`stage_b_guidance` and its checks on a real Dagster instance, with the real OpenAI-compatible client
talking to `ScriptedRuleFollowingServer` (a named test double for a capable LLM). Each check is shown
both passing and failing."""

import dagster as dg
from support.stage_b_data import CORRECT, HARMFUL, USELESS, keyword_records

from qc_assets.stage_b.assets import StageBConfig, stage_b_guidance
from qc_assets.stage_b.checks import asset_checks
from qc_assets.stage_b.split import split_three_way
from resources.doubles.llm_servers import MODEL
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl

MISSION = "挡风板安装检查"  # registered: the asset reads the real mission text, which has no 「」 keyword
CONFIG = StageBConfig(
    epochs=3, decode_grid=[[0.0, 1.0]], samples=1, constrained=False, rounds_per_epoch=2, bootstrap_samples=300
)


def materialize(root, server, records, config: StageBConfig = CONFIG):
    atomic_write_jsonl(root / "stage_a_summaries" / MISSION / "records.jsonl", records)
    llm = LLMResource(backend="openai", base_url=server.base_url, model=MODEL, max_retries=0, timeout_s=10.0)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION])
        result = dg.materialize(
            [stage_b_guidance, *asset_checks],
            partition_key=MISSION,
            instance=instance,
            resources={"storage": StorageResource(data_root=str(root)), "llm": llm},
            run_config=dg.RunConfig({"stage_b_guidance": config}),
            raise_on_error=False,
        )
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        mats = result.asset_materializations_for_node("stage_b_guidance")
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        return result, checks, mats, failure


def test_learning_run_passes_every_check_with_test_numbers(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [CORRECT]}, {"operations": [USELESS]}, {"operations": [HARMFUL]}])
    result, checks, (mat,), _ = materialize(tmp_path, scripted_server, keyword_records(n_groups=80))
    assert result.success and all(c.passed for c in checks.values())
    meta = mat.metadata
    assert meta["stage_b/stop_reason"].value == "converged" and meta["stage_b/kept_version"].value == 1
    assert meta["stage_b/test_conclusive"].value is True and meta["stage_b/test_groups"].value >= 20
    assert meta["stage_b/test_kept_accuracy"].value > meta["stage_b/test_baseline_accuracy"].value
    assert meta["stage_b/failed_calls"].value == 0 and meta["stage_b/test_records"].value > 0
    assert checks["stage_b_not_worse_than_baseline"].metadata["actual"].value == "better"


def test_not_worse_check_fails_when_kept_is_worse_on_test(scripted_server, tmp_path):
    """A distribution shift: on train and selection 松动 marks failing groups, on test it marks good
    ones. The gate rightly accepts the rule on selection; the test read exposes it and the blocking
    check fails."""
    skeleton = keyword_records(n_groups=80, noisy=0)
    split = split_three_way(skeleton, 0.25, 0.25, seed=0)
    test_ids = {r["group_id"] for r in split.test}
    loose = {r["group_id"] for r in skeleton if (r["label"] == "fail") != (r["group_id"] in test_ids)}
    records = keyword_records(n_groups=80, noisy=0, loose_in=loose)
    scripted_server.script_reflector([{"operations": [CORRECT]}])
    result, checks, (mat,), _ = materialize(tmp_path, scripted_server, records)
    assert mat.metadata["stage_b/kept_version"].value == 1  # the rule was accepted on selection
    check = checks["stage_b_not_worse_than_baseline"]
    assert not check.passed and check.metadata["actual"].value == "worse"
    assert check.metadata["ci_high"].value < 0
    assert check.metadata["kept_test_accuracy"].value < check.metadata["baseline_test_accuracy"].value


def test_converged_check_warns_with_its_cause_when_no_candidate_was_usable(scripted_server, tmp_path):
    scripted_server.script_reflector(["not json"])
    result, checks, _, _ = materialize(tmp_path, scripted_server, keyword_records(n_groups=24))
    check = checks["stage_b_converged"]
    assert result.success and not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["actual"].value == "no_usable_candidate"
    assert "invalid JSON" in check.metadata["cause"].value
    assert checks["stage_b_not_worse_than_baseline"].passed
    assert checks["stage_b_not_worse_than_baseline"].metadata["actual"].value == "inconclusive"


def test_converged_check_warns_when_stopped_at_max_epochs(scripted_server, tmp_path):
    scripted_server.script_reflector([{"operations": [CORRECT]}])
    config = StageBConfig(
        epochs=1, decode_grid=[[0.0, 1.0]], samples=1, constrained=False, rounds_per_epoch=1, bootstrap_samples=300
    )
    _, checks, _, _ = materialize(tmp_path, scripted_server, keyword_records(n_groups=40), config)
    check = checks["stage_b_converged"]
    assert not check.passed and check.metadata["actual"].value == "max_epochs"
    assert "still accepting" in check.metadata["cause"].value


def test_an_outage_fails_the_asset_with_the_counts(scripted_server, tmp_path):
    scripted_server.outage = True
    result, checks, _, failure = materialize(tmp_path, scripted_server, keyword_records(n_groups=12))
    assert not result.success and failure is not None
    error = failure.step_failure_data
    assert "LLM calls failed" in error.error.message
    meta = error.user_failure_data.metadata
    assert meta["stage_b/failed_calls"].value == meta["stage_b/llm_calls"].value > 0
    assert meta["stage_b/failed_call_rate"].value == 1.0
    assert not (tmp_path / "stage_b_guidance" / MISSION / "result.json").exists()
