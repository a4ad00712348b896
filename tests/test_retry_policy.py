"""A transient provider outage is retried by Dagster's RetryPolicy, with backoff, and the retry finishes
the work: the real Stage-B asset and OpenAI-compatible client against `ScriptedRuleFollowingServer`
(a named test double) that answers 503 until the first attempt has failed."""

import json
import threading
import time

import dagster as dg
from support.stage_b_data import keyword_records

from qc_assets.gpu_steps import model_retry_policy
from qc_assets.stage_b.assets import StageBConfig, stage_b_guidance
from resources.doubles.llm_servers import MODEL
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl

MISSION = "挡风板安装检查"
CONFIG = StageBConfig(
    epochs=1, decode_grid=[[0.0, 1.0]], samples=1, constrained=False, rounds_per_epoch=1, bootstrap_samples=100
)


def end_outage_after_first_failure(server, state_file, timeout_s: float = 60.0) -> threading.Thread:
    """The outage lasts until Stage-B has recorded its first attempt as failed, then the server recovers."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if state_file.exists() and json.loads(state_file.read_text(encoding="utf-8")).get("status") == "failed":
                server.outage = False
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def run(tmp_path, server, retry_policy):
    atomic_write_jsonl(tmp_path / "stage_a_summaries" / MISSION / "records.jsonl", keyword_records(n_groups=24))
    job = dg.define_asset_job("stage_b_with_retries", selection=[stage_b_guidance], op_retry_policy=retry_policy)
    llm = LLMResource(backend="openai", base_url=server.base_url, model=MODEL, max_retries=0, timeout_s=10.0)
    defs = dg.Definitions(
        assets=[stage_b_guidance],
        jobs=[job],
        resources={"storage": StorageResource(data_root=str(tmp_path)), "llm": llm},
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("missions", [MISSION])
        return defs.resolve_job_def("stage_b_with_retries").execute_in_process(
            partition_key=MISSION,
            instance=instance,
            raise_on_error=False,
            run_config=dg.RunConfig({"stage_b_guidance": CONFIG}),
        )


def test_an_outage_is_retried_with_backoff_and_the_retry_finishes(scripted_server, tmp_path, monkeypatch):
    monkeypatch.setenv("QC_MODEL_RETRIES", "2")
    monkeypatch.setenv("QC_MODEL_RETRY_DELAY_S", "0.5")
    policy = model_retry_policy()
    assert policy.max_retries == 2 and policy.backoff == dg.Backoff.EXPONENTIAL
    scripted_server.outage = True
    watcher = end_outage_after_first_failure(scripted_server, tmp_path / "stage_b_guidance" / MISSION / "state.json")
    result = run(tmp_path, scripted_server, policy)
    watcher.join(timeout=1)
    assert result.success
    events = [e.event_type for e in result.all_events]
    assert events.count(dg.DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert events.count(dg.DagsterEventType.STEP_RESTARTED) == 1
    (mat,) = result.asset_materializations_for_node("stage_b_guidance")
    assert mat.metadata["stage_b/failed_calls"].value == 0


def test_without_a_retry_policy_the_outage_fails_the_run(scripted_server, tmp_path):
    scripted_server.outage = True
    result = run(tmp_path, scripted_server, None)
    assert not result.success
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in [e.event_type for e in result.all_events]
