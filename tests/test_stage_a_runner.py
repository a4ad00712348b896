import json
import os
import signal
import subprocess
import sys
import time

from qc_assets.missions import get_mission
from qc_assets.stage_a.records import validate_records
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from resources.store import read_jsonl

MISSION = get_mission("BBU接地线检查")


class CountingVLM:
    """Wraps the real tiny model and counts the images it is asked to summarise."""

    def __init__(self, inner):
        self.inner, self.images = inner, 0

    fingerprint = property(lambda self: self.inner.fingerprint)
    note = property(lambda self: self.inner.note)

    def generate(self, prompts, decode):
        self.images += len(prompts)
        return self.inner.generate(prompts, decode)


def test_records_follow_the_contract_and_every_file_is_accounted(tiny_vlm, sample_images, tmp_path):
    result = run_stage_a(sample_images, MISSION, tiny_vlm, StageAConfig(batch_size=4, max_new_tokens=8), tmp_path)
    validate_records(result.records)
    assert {r["label"] for r in result.records} == {"pass", "fail"}
    assert sorted(r["group_id"] for r in result.records).count("G900") == 2
    for r in result.records:
        assert list(r["per_image"]) == [f"image_{i}" for i in range(1, len(r["images"]) + 1)]
        assert r["model_fingerprint"] == tiny_vlm.fingerprint and r["prompt_hash"]
    on_disk = read_jsonl(tmp_path / "records.jsonl")
    assert on_disk == result.records
    skipped = {row["path"] for row in read_jsonl(tmp_path / "skipped.jsonl")}
    assert "审核不通过/G150/10.jpg" in skipped


def test_rerun_reuses_everything_and_new_group_only_summarises_new_images(tiny_vlm, sample_images, tmp_path):
    config = StageAConfig(batch_size=4, max_new_tokens=8)
    first = run_stage_a(sample_images, MISSION, tiny_vlm, config, tmp_path)
    counting = CountingVLM(tiny_vlm)
    again = run_stage_a(sample_images, MISSION, counting, config, tmp_path)
    assert counting.images == 0 and again.records == first.records

    new_group = sample_images / MISSION.name / "审核通过" / "G777"
    new_group.mkdir()
    src = sample_images / MISSION.name / "审核通过" / "G100" / "1.jpg"
    (new_group / "1.jpg").write_bytes(src.read_bytes())
    third = run_stage_a(sample_images, MISSION, counting, config, tmp_path)
    assert counting.images == 1
    assert len(third.records) == len(first.records) + 1


def test_changed_decode_params_resummarise(tiny_vlm, sample_images, tmp_path):
    run_stage_a(sample_images, MISSION, tiny_vlm, StageAConfig(batch_size=4, max_new_tokens=8), tmp_path)
    counting = CountingVLM(tiny_vlm)
    result = run_stage_a(sample_images, MISSION, counting, StageAConfig(batch_size=4, max_new_tokens=9), tmp_path)
    assert counting.images == sum(len(r["images"]) for r in result.records)


def test_per_image_mode_gives_the_same_records_under_greedy_decoding(tiny_vlm, sample_images, tmp_path):
    by_group = run_stage_a(
        sample_images, MISSION, tiny_vlm, StageAConfig("per_group", 3, max_new_tokens=8), tmp_path / "g"
    )
    by_image = run_stage_a(
        sample_images, MISSION, tiny_vlm, StageAConfig("per_image", 3, max_new_tokens=8), tmp_path / "i"
    )
    assert [r["per_image"] for r in by_image.records] == [r["per_image"] for r in by_group.records]


def test_caps_list_left_out_images_as_not_sampled(tiny_vlm, sample_images, tmp_path):
    result = run_stage_a(
        sample_images, MISSION, tiny_vlm, StageAConfig(pass_cap=1, fail_cap=1, max_new_tokens=8), tmp_path
    )
    assert len(result.records) == 2
    assert any(s.reason.startswith("not sampled") for s in result.skipped)


_CHILD = """
import sys
from qc_assets.missions import get_mission
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from resources.vlm.transformers_backend import TransformersVLM
vlm = TransformersVLM(sys.argv[1])
run_stage_a(sys.argv[2], get_mission("BBU接地线检查"), vlm,
            StageAConfig(batch_size=1, max_new_tokens=8), sys.argv[3])
"""


def test_kill_9_mid_run_loses_nothing_and_rerun_does_only_the_rest(tiny_vlm, tiny_vlm_dir, sample_images, tmp_path):
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tiny_vlm_dir), str(sample_images), str(out)],
        cwd=os.getcwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = out / "summaries.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or len(read_jsonl(log)) < 3):
        assert child.poll() is None, "the child finished before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    survived = read_jsonl(log)
    assert len(survived) >= 3
    assert not (out / "records.jsonl").exists()  # the kill came before the final atomic write

    counting = CountingVLM(tiny_vlm)
    result = run_stage_a(sample_images, MISSION, counting, StageAConfig(batch_size=1, max_new_tokens=8), out)
    total = sum(len(r["images"]) for r in result.records)
    assert counting.images == total - len(survived)
    finished = {(row["image"], row["summary"]) for row in survived}
    kept = {(path, r["per_image"][f"image_{i}"]) for r in result.records for i, path in enumerate(r["images"], 1)}
    assert finished <= kept  # finished work is reused as it was, not redone
    assert json.loads((out / "records.jsonl").read_text(encoding="utf-8").splitlines()[0])["mission"] == MISSION.name
