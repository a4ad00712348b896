"""Stage-A through the `openai` VLM backend: a bounded in-flight pool, answers saved as they finish.

The server is `ScriptedVLMServerDouble` (a test double: no real VLM server runs on this CPU machine);
the client is the production `OpenAIVisionModel` built by `VLMResource`.
"""

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from qc_assets.missions import get_mission
from qc_assets.stage_a.discovery import discover
from qc_assets.stage_a.records import validate_records
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from resources.doubles.vlm_server import ScriptedVLMServerDouble, answer_for
from resources.store import read_jsonl
from resources.vlm import VisionDecode, VLMRequestError
from resources.vlm.resource import VLMResource

MISSION = get_mission("BBU接地线检查")
CONFIG = StageAConfig(batch_size=1, max_new_tokens=8)


@pytest.fixture
def server():
    srv = ScriptedVLMServerDouble()
    yield srv
    srv.close()


def _remote(url, **settings):
    return VLMResource(backend="openai", base_url=url, model="double", **settings).get_vlm()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_requests_in_flight_follow_the_pool_not_the_batch_size(server, sample_images, tmp_path):
    server.delay_s = 0.5  # long enough that four requests overlap even on a loaded CPU
    result = run_stage_a(sample_images, MISSION, _remote(server.base_url, max_in_flight=4), CONFIG, tmp_path)
    assert len(server.requests) == result.summarised_now > 4
    assert server.max_in_flight == 4  # batch_size is 1: sent batch by batch it would have been 1
    validate_records(result.records)
    image = sample_images / MISSION.name / result.records[0]["images"][0]
    assert result.records[0]["per_image"]["image_1"] == answer_for(image.read_bytes())


def test_answers_are_saved_as_they_finish_not_in_submission_order(server, sample_images, tmp_path):
    first = discover(sample_images, MISSION.name).groups[0].images[0]  # the first one submitted
    server.delay_s, server.slow[first.sha256] = 0.05, 3.0
    result = run_stage_a(sample_images, MISSION, _remote(server.base_url, max_in_flight=3), CONFIG, tmp_path)
    log = read_jsonl(tmp_path / "summaries.jsonl")
    assert [row["image"] for row in log][-1] == first.path  # saved last: it held nothing back
    assert len(log) == result.summarised_now > 3


def test_failed_requests_are_listed_and_a_rerun_asks_only_for_them(server, sample_images, tmp_path):
    broken = sample_images / MISSION.name / "审核不通过" / "G150" / "1.jpg"
    server.failing.add(_sha(broken))
    with pytest.raises(VLMRequestError) as err:
        run_stage_a(sample_images, MISSION, _remote(server.base_url, max_retries=1), CONFIG, tmp_path)
    assert [path for path, _ in err.value.failures] == ["审核不通过/G150/1.jpg"]
    assert "500" in err.value.failures[0][1]
    assert sum(r["sha256"] == _sha(broken) for r in server.requests) == 2  # the SDK retried once
    saved = read_jsonl(tmp_path / "summaries.jsonl")
    assert "审核不通过/G150/1.jpg" not in {r["image"] for r in saved}
    assert not (tmp_path / "records.jsonl").exists()

    server.failing.clear()
    before = len(server.requests)
    result = run_stage_a(sample_images, MISSION, _remote(server.base_url), CONFIG, tmp_path)
    assert [r["sha256"] for r in server.requests[before:]] == [_sha(broken)]
    assert result.summarised_now == 1 and result.reused == len(saved)


def test_image_budget_is_applied_client_side_and_a_new_budget_resummarises(server, sample_images, tmp_path):
    run_stage_a(sample_images, MISSION, _remote(server.base_url), CONFIG, tmp_path)
    sent = {r["sha256"] for r in server.requests}
    files = {_sha(p) for p in (sample_images / MISSION.name).rglob("*") if p.is_file()}
    assert sent <= files  # under the default budget every photo is sent byte for byte

    small = dataclasses.replace(MISSION, max_pixels=64 * 64)
    before = len(server.requests)
    result = run_stage_a(sample_images, small, _remote(server.base_url), CONFIG, tmp_path)
    again = server.requests[before:]
    assert len(again) == result.summarised_now == len(sent)  # the budget is in the resume key
    assert all(w * h <= 64 * 64 for w, h in (r["size"] for r in again))
    assert all(r["sha256"] not in files for r in again)


_CHILD = """
import sys
from qc_assets.missions import get_mission
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from resources.vlm.resource import VLMResource
vlm = VLMResource(backend="openai", base_url=sys.argv[1], model="double", max_in_flight=2).get_vlm()
run_stage_a(sys.argv[2], get_mission("BBU接地线检查"), vlm,
            StageAConfig(batch_size=1, max_new_tokens=8), sys.argv[3])
"""


def test_kill_9_mid_stream_then_rerun_redoes_nothing(server, sample_images, tmp_path):
    server.delay_s = 0.5  # 12 images, 2 in flight: about 3 s, so the kill lands mid-run
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, server.base_url, str(sample_images), str(out)],
        cwd=os.getcwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = out / "summaries.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or len(read_jsonl(log)) < 3):
        assert child.poll() is None, "the child finished before it could be killed"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    time.sleep(0.5)  # a request the child sent just before it died is still read and held by the server
    server.wait_idle()
    survived = read_jsonl(log)
    assert len(survived) >= 3
    assert not (out / "records.jsonl").exists()  # killed before the final atomic write

    server.delay_s = 0.0
    before = len(server.requests)
    result = run_stage_a(sample_images, MISSION, _remote(server.base_url, max_in_flight=2), CONFIG, out)
    asked_again = [r["sha256"] for r in server.requests[before:]]
    total = sum(len(r["images"]) for r in result.records)
    assert len(asked_again) == total - len(survived)
    assert not set(asked_again) & {row["sha256"] for row in survived}  # nothing finished was redone
    kept = {(path, r["per_image"][f"image_{i}"]) for r in result.records for i, path in enumerate(r["images"], 1)}
    assert {(row["image"], row["summary"]) for row in survived} <= kept


def test_asset_fails_with_the_failed_images_then_a_rerun_finishes_them(server, sample_images, tmp_path):
    import dagster as dg

    from qc_assets.partitions import mission_partitions
    from qc_assets.stage_a.assets import stage_a_summaries
    from resources.storage import StorageResource

    broken = discover(sample_images, MISSION.name).groups[-1].images[0]
    server.failing.add(broken.sha256)
    resources = {
        "storage": StorageResource(data_root=str(tmp_path / "data"), images_root=str(sample_images)),
        "vlm": VLMResource(backend="openai", base_url=server.base_url, model="double", max_retries=0),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [MISSION.name])
        failed = dg.materialize(
            [stage_a_summaries],
            partition_key=MISSION.name,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not failed.success
        failure = failed.failure_data_for_node("stage_a_summaries").user_failure_data
        assert failure.metadata["stage_a/failed_requests"].value == 1
        assert broken.path in failure.metadata["failed_images"].value

        server.failing.clear()
        done = dg.materialize([stage_a_summaries], partition_key=MISSION.name, instance=instance, resources=resources)
        meta = done.asset_materializations_for_node("stage_a_summaries")[0].metadata
        assert meta["stage_a/images_generated_this_run"].value == 1
        assert meta["model_fingerprint"].value.startswith("openai:double@127.0.0.1")


def test_closing_the_stream_early_cancels_the_pool_and_its_thread(server, sample_images):
    import threading

    from resources.vlm import VisionPrompt

    server.delay_s = 0.3
    images = sorted((sample_images / MISSION.name).rglob("*.jpg"))[:10]
    stream = _remote(server.base_url, max_in_flight=2).stream(
        [VisionPrompt(str(p), "s", "u") for p in images], VisionDecode(max_new_tokens=4)
    )
    first = next(stream)
    stream.close()
    assert 1 <= len(first) <= 2 and first[0].output is not None
    assert not any(t.name == "openai-vlm-stream" for t in threading.enumerate())
    time.sleep(0.8)  # long enough for two more rounds, had the pool kept going
    assert len(server.requests) <= 4


def test_streamed_shards_give_the_records_of_one_and_ask_for_each_photo_once(server, sample_images, tmp_path):
    one = run_stage_a(sample_images, MISSION, _remote(server.base_url), CONFIG, tmp_path / "one")
    asked_before = len(server.requests)
    sharded = dataclasses.replace(CONFIG, shards=3, sharding_mode="per_image")
    many = run_stage_a(sample_images, MISSION, _remote(server.base_url, max_in_flight=2), sharded, tmp_path / "many")
    assert (tmp_path / "many" / "records.jsonl").read_bytes() == (tmp_path / "one" / "records.jsonl").read_bytes()
    asked = [r["sha256"] for r in server.requests[asked_before:]]
    assert len(asked) == many.summarised_now == one.summarised_now
    assert sorted(asked) == sorted(r["sha256"] for r in read_jsonl(tmp_path / "one" / "summaries.jsonl"))
