"""Sharded Stage-A as plain code on the tiny real model: assignment, per-photo resume whatever the
shard count, a merge that refuses unfinished shards, and records byte-identical to one shard."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from qc_assets.missions import get_mission
from qc_assets.stage_a.runner import StageAConfig, run_stage_a
from qc_assets.stage_a.sharding import (
    ShardNotFinished,
    load_plan,
    marker_path,
    merge_shards,
    plan_stage_a,
    run_shard,
    shard_of,
    vision_grid,
)
from resources.store import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MISSION = get_mission("BBU接地线检查")
SMOKE = {"max_new_tokens": 8, "max_truncated_share_blocking": 1.0}  # tests/support/stage_a_smoke.py's cap


class CountingVLM:
    """Wraps the real tiny model and records every photo it is asked to summarise."""

    def __init__(self, inner):
        self.inner, self.paths = inner, []

    fingerprint = property(lambda self: self.inner.fingerprint)
    note = property(lambda self: self.inner.note)

    def generate(self, prompts, decode):
        self.paths += [p.image_path for p in prompts]
        return self.inner.generate(prompts, decode)


def test_shard_of_is_a_fixed_function_of_the_key():
    # recorded values: a change of hash would re-shard every mission and must be a deliberate one
    assert [shard_of(k, 4) for k in ("G100", "G101", "G900", "审核通过/G100/1.jpg")] == [0, 1, 0, 0]
    assert (shard_of("G100", 8), shard_of("RRU-7", 8), shard_of("G100", 1)) == (4, 0, 0)
    spread = Counter(shard_of(f"G{n}", 4) for n in range(400))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 60, spread
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_of("G100", 0)


def test_shard_of_does_not_depend_on_the_process():
    # another interpreter with another hash seed (another worker, another host) assigns the same shards
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from qc_assets.stage_a.sharding import shard_of;print(shard_of('G100', 8), shard_of('RRU-7', 8))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
        cwd=ROOT,
    )
    assert out.stdout.split() == ["4", "0"]


def test_config_validates_shards_and_sharding_mode():
    with pytest.raises(ValueError, match="shards must be >= 1, got 0"):
        StageAConfig(shards=0)
    with pytest.raises(ValueError, match="sharding_mode must be one of"):
        StageAConfig(sharding_mode="per_rank")


def test_per_group_shards_keep_every_occurrence_of_a_group_together(tiny_vlm, sample_images, tmp_path):
    plan = plan_stage_a(sample_images, MISSION, tiny_vlm.fingerprint, StageAConfig(shards=3, **SMOKE), tmp_path)
    owners = {}
    for shard in range(3):
        for g, _ in plan.items(shard):
            owners.setdefault(g.group_id, set()).add(shard)
    assert all(len(s) == 1 for s in owners.values()), owners  # G900 under both labels: one shard
    planned = sorted(img.path for g in plan.groups for img in g.images)
    assert sorted(img.path for s in range(3) for _, img in plan.items(s)) == planned


@pytest.mark.parametrize(
    "shards,sharding_mode,batch",
    [
        (2, "per_group", {"mode": "per_group", "batch_size": 8}),
        (3, "per_image", {"mode": "per_image", "batch_size": 1}),
    ],
)
def test_sharded_records_are_byte_identical_to_one_shard(
    tiny_vlm, sample_images, tmp_path, shards, sharding_mode, batch
):
    # greedy decoding; the same batches per photo (whole groups, or one photo per batch) as one shard
    one = run_stage_a(sample_images, MISSION, tiny_vlm, StageAConfig(**SMOKE, **batch), tmp_path / "one")
    many = run_stage_a(
        sample_images,
        MISSION,
        tiny_vlm,
        StageAConfig(**SMOKE, **batch, shards=shards, sharding_mode=sharding_mode),
        tmp_path / "many",
    )
    assert (tmp_path / "many" / "records.jsonl").read_bytes() == (tmp_path / "one" / "records.jsonl").read_bytes()
    assert (tmp_path / "many" / "skipped.jsonl").read_bytes() == (tmp_path / "one" / "skipped.jsonl").read_bytes()
    assert many.summarised_now == one.summarised_now > 0
    assert [m["shard"] for m in many.shard_results] == list(range(shards))
    assert sum(m["assigned"] for m in many.shard_results) == one.summarised_now
    # the shard logs were folded into the one log and removed
    assert not list((tmp_path / "many").glob("summaries.shard-*.jsonl"))
    assert len(read_jsonl(tmp_path / "many" / "summaries.jsonl")) == one.summarised_now


def test_resume_is_per_photo_whatever_the_shard_count(tiny_vlm, sample_images, tmp_path):
    config2 = StageAConfig(shards=2, **SMOKE)
    plan = plan_stage_a(sample_images, MISSION, tiny_vlm.fingerprint, config2, tmp_path)
    first = run_shard(plan, 0, MISSION, tiny_vlm, config2, tmp_path, log=lambda m: None)  # then the run "crashed"
    total = sum(len(g.images) for g in plan.groups)
    assert 0 < first.summarised_now < total

    counting = CountingVLM(tiny_vlm)
    result = run_stage_a(sample_images, MISSION, counting, StageAConfig(shards=4, **SMOKE), tmp_path)
    assert len(counting.paths) == total - first.summarised_now == result.summarised_now
    assert len(set(counting.paths)) == len(counting.paths)
    assert result.reused == first.summarised_now
    # the 2-shard run's orphaned log still counts, and now a 3-shard run has nothing left to do
    again = CountingVLM(tiny_vlm)
    assert run_stage_a(sample_images, MISSION, again, StageAConfig(shards=3, **SMOKE), tmp_path).summarised_now == 0
    assert again.paths == []
    logged = Counter(
        (r["run_key"], r["image"], r["sha256"]) for path in tmp_path.glob("summaries*.jsonl") for r in read_jsonl(path)
    )
    assert len(logged) == total and max(logged.values()) == 1


def test_merge_never_reads_an_unfinished_shard(tiny_vlm, sample_images, tmp_path):
    config = StageAConfig(shards=2, **SMOKE)
    plan = plan_stage_a(sample_images, MISSION, tiny_vlm.fingerprint, config, tmp_path)
    run_shard(plan, 0, MISSION, tiny_vlm, config, tmp_path, log=lambda m: None)
    with pytest.raises(ShardNotFinished, match=r"shards \[1\] of 2 have not finished"):
        merge_shards(plan, config, tmp_path, tiny_vlm.fingerprint, MISSION, log=lambda m: None)
    assert not (tmp_path / "records.jsonl").exists()
    assert (tmp_path / "summaries.shard-0-of-2.jsonl").exists()  # nothing was folded either

    run_shard(plan, 1, MISSION, tiny_vlm, config, tmp_path, log=lambda m: None)
    # a new plan (a photo arrived) makes the old markers stale: the merge refuses them too
    extra = sample_images / MISSION.name / "审核通过" / "G100" / "99.jpg"
    extra.write_bytes((sample_images / MISSION.name / "审核通过" / "G100" / "1.jpg").read_bytes())
    stale = {s: json.loads(marker_path(tmp_path, s, 2).read_text()) for s in range(2)}
    new_plan = plan_stage_a(sample_images, MISSION, tiny_vlm.fingerprint, config, tmp_path)
    assert new_plan.plan_id != plan.plan_id and load_plan(tmp_path).plan_id == new_plan.plan_id
    for s, marker in stale.items():
        marker_path(tmp_path, s, 2).write_text(json.dumps(marker))
    with pytest.raises(ShardNotFinished, match=r"shards \[0, 1\] of 2 have not finished"):
        merge_shards(new_plan, config, tmp_path, tiny_vlm.fingerprint, MISSION, log=lambda m: None)


def test_a_shard_with_another_model_than_the_plan_is_refused(tiny_vlm, sample_images, tmp_path):
    plan = plan_stage_a(sample_images, MISSION, tiny_vlm.fingerprint, StageAConfig(shards=2, **SMOKE), tmp_path)
    with pytest.raises(ValueError, match="computes run key"):
        run_shard(plan, 0, MISSION, tiny_vlm, StageAConfig(shards=2, max_new_tokens=9), tmp_path)
    with pytest.raises(ValueError, match=r"shard must be in \[0, 2\), got 2"):
        run_shard(plan, 2, MISSION, tiny_vlm, StageAConfig(shards=2, **SMOKE), tmp_path)


def test_verify_inputs_logs_the_first_batch_on_shard_0_only(tiny_vlm, sample_images, tmp_path):
    logged = []
    run_stage_a(
        sample_images,
        MISSION,
        tiny_vlm,
        StageAConfig(shards=2, verify_inputs=True, batch_size=2, **SMOKE),
        tmp_path,
        log=logged.append,
    )
    lines = [m for m in logged if m.startswith("verify_inputs:")]
    assert 1 <= len(lines) <= 2, lines  # one batch of at most 2 photos, on shard 0 only
    assert all(
        " sha256 " in m and " grid 1x" in m and "prompt_tokens " in m and "completion_tokens 8" in m for m in lines
    )
    assert vision_grid(640, 480, 1024 * 1024) == (30, 40)
    assert vision_grid(4000, 3000, 640 * 640)[0] * vision_grid(4000, 3000, 640 * 640)[1] * 256 <= 640 * 640
