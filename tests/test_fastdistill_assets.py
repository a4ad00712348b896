"""The FastDistill group on a real Dagster instance with the embedded SmolLM2 teacher.

SmolLM2-135M writes mostly wrong SQL; the test checks that the pipeline, its files and its reports
are complete and consistent with the rows, not that the teacher is good.
"""

import json

import dagster as dg
import polars as pl
import pytest

from qc_assets.cli.fastdistill import run_fastdistill
from qc_assets.fastdistill.assets import assets as fd_assets
from qc_assets.fastdistill.partitions import fastdistill_runs
from resources.llm.resource import LLMResource
from resources.storage import StorageResource

TINY = {
    "max_train": 4,
    "max_dev": 2,
    "max_new_tokens": 24,
    "chunk_size": 4,
    "require_gold_match": False,
    "min_score": 0.0,
}
TINY_STUDENT = {"lora": {"max_steps": 2, "batch_size": 2}, "eval_max_new_tokens": 16}
STAGES_WITH_REPORTS = ("canonical", "dedup", "teacher", "filter", "exec_eval", "score", "select", "export")


def checks_of(result):
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def meta(result, asset):
    mats = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mats[-1].metadata.items()}


@pytest.mark.slow
def test_fastdistill_group_end_to_end_and_rerun_calls_no_teacher(tmp_path):
    storage = StorageResource(data_root=str(tmp_path / "data"))
    teacher = LLMResource(batch_size=4, cpu_threads=1)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = run_fastdistill(
            "r1", TINY, instance=instance, storage=storage, teacher_llm=teacher, include_student=False
        )
        assert result.success
        run = tmp_path / "data" / "fastdistill" / "r1"
        for stage in STAGES_WITH_REPORTS:
            manifest = json.loads((run / stage / "manifest.json").read_text())
            assert set(manifest) == {"count", "field_hash", "min_sample_id", "max_sample_id", "columns"}
            quality = json.loads((run / stage / "quality_report.json").read_text())
            assert {
                "total",
                "kept",
                "rejected",
                "p_keep",
                "exec_pass_rate",
                "gold_match_rate",
                "judge_score",
                "reject_reason_counts",
                "exec_error_counts",
            } <= set(quality)
            timing = json.loads((run / stage / "timing_report.json").read_text())
            assert set(timing["stages"][stage]) == {"count", "p50", "p90", "p95", "wall_s"}

        teacher_rows = pl.read_parquet(run / "teacher" / "candidates.parquet")
        assert teacher_rows.height == 4
        scored = pl.read_parquet(run / "score" / "candidates.parquet").to_dicts()
        q = json.loads((run / "score" / "quality_report.json").read_text())
        assert q["exec_pass_rate"] == sum(r["exec_pass"] for r in scored) / 4
        assert all(not r["exec_pass"] for r in scored if r["reject_reason"] is not None)  # cheap gates first
        selected = pl.read_parquet(run / "select" / "candidates.parquet").to_dicts()
        sft = [json.loads(x) for x in (run / "export" / "sft_chatml.jsonl").read_text().splitlines()]
        assert len(sft) == sum(r["kept"] and r["split"] == "train" for r in selected)
        for row in sft:
            assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
            assert row["messages"][-1]["content"].strip()

        run_timing = json.loads((run / "reports" / "timing_report.json").read_text())
        assert set(run_timing["stages"]) == set(STAGES_WITH_REPORTS)
        assert run_timing["total"]["wall_s"] == pytest.approx(sum(s["wall_s"] for s in run_timing["stages"].values()))
        metrics = json.loads((run / "reports" / "metrics.json").read_text())
        assert metrics["teacher_tokens_per_sec"] > 0
        assert set(metrics) == {"teacher_tokens_per_sec", "pipeline_kept_samples_per_hour", "train_tokens_per_sec"}

        teacher_meta = meta(result, "fastdistill_teacher")
        assert teacher_meta["fastdistill/teacher_calls"] >= 1 and teacher_meta["fastdistill/cached_samples"] == 0
        assert [c.name for c in teacher_meta["dagster/column_schema"].columns] == teacher_rows.columns
        dataset_meta = meta(result, "fastdistill_dataset")
        assert dataset_meta["dagster/row_count"] == len(sft)
        assert len(dataset_meta["preview"]) <= 500
        checks = checks_of(result)
        assert set(checks) == {"exec_pass_rate", "keep_rate", "no_empty_outputs"}
        assert checks["no_empty_outputs"].passed
        assert checks["exec_pass_rate"].passed == (q["exec_pass_rate"] >= 0.2)

        # same run_id again: every sample comes from the cache, the teacher gets no request
        again = dg.materialize(
            [a for a in fd_assets if a.key.path[-1] == "fastdistill_teacher"],
            partition_key="r1",
            instance=instance,
            resources={"storage": storage, "teacher_llm": teacher},
        )
        assert again.success
        again_meta = meta(again, "fastdistill_teacher")
        assert again_meta["fastdistill/teacher_calls"] == 0
        assert again_meta["fastdistill/cached_samples"] == 4
        history = json.loads((run / "teacher" / "generation_stats.json").read_text())["invocations"]
        assert [h["teacher_calls"] for h in history][-1] == 0
        assert pl.read_parquet(run / "teacher" / "candidates.parquet").equals(teacher_rows)


def test_definitions_shape_and_config_mismatch_is_refused(tmp_path):
    keys = {a.key.path[-1] for a in fd_assets}
    assert keys == {
        "fastdistill_inputs",
        "fastdistill_teacher",
        "fastdistill_scored",
        "fastdistill_dataset",
        "fastdistill_student",
    }
    assert all(a.group_names_by_key[a.key] == "fastdistill" for a in fd_assets)
    assert all(a.partitions_def == fastdistill_runs for a in fd_assets)
    storage = StorageResource(data_root=str(tmp_path / "data"))
    inputs = [a for a in fd_assets if a.key.path[-1] == "fastdistill_inputs"]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("fastdistill_runs", ["x"])
        ok = dg.materialize(
            inputs,
            partition_key="x",
            instance=instance,
            resources={"storage": storage},
            run_config={"ops": {"fastdistill_inputs": {"config": {"max_train": 3, "max_dev": 1}}}},
        )
        assert ok.success and meta(ok, "fastdistill_inputs")["dagster/row_count"] == 4
        with pytest.raises(ValueError, match="use a new run_id"):
            dg.materialize(
                inputs,
                partition_key="x",
                instance=instance,
                resources={"storage": storage},
                run_config={"ops": {"fastdistill_inputs": {"config": {"max_train": 5}}}},
            )
