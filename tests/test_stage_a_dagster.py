"""Stage-A on a real Dagster instance: materialize + checks, the sensor, and a per-mission backfill."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from support.stage_a_smoke import SMOKE_STAGE_A, smoke_settings_file

from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import stage_a_summaries
from qc_assets.stage_a.checks import asset_checks, images_accounted, truncation_share
from qc_assets.stage_a.jobs import stage_a_job
from resources.storage import StorageResource
from resources.store import atomic_write_jsonl, read_jsonl
from resources.vlm.resource import VLMResource

ROOT = Path(__file__).resolve().parents[1]
MISSIONS = ["BBU接地线检查", "RRU安装检查"]


def _resources(tmp_path, images, model_dir):
    return {
        "storage": StorageResource(data_root=str(tmp_path / "data"), images_root=str(images)),
        "vlm": VLMResource(model_path=str(model_dir)),
    }


def test_definitions_load_without_model_libraries():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, definitions; "
            "print(definitions.defs.resolve_job_def('qc_pipeline').name, 'torch' in sys.modules)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[-2:] == ["qc_pipeline", "False"]


def _run_stage_a_job(instance, resources, mission, config=None, raise_on_error=True):
    defs = dg.Definitions(
        assets=[stage_a_summaries], asset_checks=asset_checks, jobs=[stage_a_job], resources=resources
    )
    run_config = {"ops": {"stage_a_summaries": {"config": config or SMOKE_STAGE_A}}}
    return defs.resolve_job_def("stage_a_job").execute_in_process(
        partition_key=mission, instance=instance, run_config=run_config, raise_on_error=raise_on_error
    )


def test_materialize_partition_runs_checks_and_reports_metadata(tiny_vlm_dir, sample_images, tmp_path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, MISSIONS)
        result = _run_stage_a_job(instance, _resources(tmp_path, sample_images, tiny_vlm_dir), MISSIONS[0])
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        # the smoke model runs every answer to the cap: the truncation check warns (SMOKE_STAGE_A lifts the block)
        assert checks == {
            "stage_a_schema": True,
            "stage_a_images_accounted": True,
            "stage_a_degenerate_share": checks["stage_a_degenerate_share"],
            "stage_a_truncation_share": False,
        }
        meta = result.asset_materializations_for_node("stage_a_summaries")[0].metadata
        assert meta["dagster/row_count"].value == 6  # 2 groups per label + G900 under both labels
        assert meta["stage_a/images_skipped"].value >= 4
        assert meta["model_fingerprint"].value.startswith("tiny-qwen3vl")
        assert len(meta["preview"].value) <= 500
        assert meta["stage_a/truncated_images"].value == meta["stage_a/images_summarised"].value > 0
        assert (
            meta["stage_a/max_new_tokens"].value == 8
            and "below the production default 1024" in meta["max_new_tokens_note"].value
        )
        assert meta["answer_length_histogram"].value.startswith("![answer lengths](data:image/png;base64,")


def test_accounting_check_fails_when_a_file_is_neither_summarised_nor_listed(tiny_vlm_dir, sample_images, tmp_path):
    resources = _resources(tmp_path, sample_images, tiny_vlm_dir)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, MISSIONS)
        assert _run_stage_a_job(instance, resources, MISSIONS[0]).success
        # a photo arrives after the run: nobody has summarised or listed it yet
        (sample_images / MISSIONS[0] / "审核通过" / "G100" / "late.jpg").write_bytes(b"x")
        # Dagster cannot run a partitioned check without its asset, so evaluate the check's body directly
        late = images_accounted(resources["storage"], MISSIONS[0])
        assert late.passed is False
        assert late.metadata["actual_unaccounted"].value == 1
        # the next run lists the bad file, and the check passes again
        rerun = _run_stage_a_job(instance, resources, MISSIONS[0])
        assert {e.check_name: e.passed for e in rerun.get_asset_check_evaluations()}["stage_a_images_accounted"]


def test_backfill_of_two_missions_from_the_cli_on_a_real_instance(tiny_vlm_dir, sample_images, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # launch runs immediately (no daemon in a test); otherwise the instance is the one `make demo` uses
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "QC_DATA_ROOT": str(tmp_path / "data"),
        "QC_IMAGES_ROOT": str(sample_images),
        "QC_VLM_MODEL": str(tiny_vlm_dir),
        # a backfill takes no run config: the job's default comes from QC_STAGE_A_CONFIG
        "QC_STAGE_A_CONFIG": smoke_settings_file(tmp_path),
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(mission_partitions.name, MISSIONS)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "backfill",
            "-f",
            "definitions.py",
            "-j",
            "stage_a_job",
            "--partitions",
            ",".join(MISSIONS),
            "--noprompt",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            if len(runs) == 2 and all(r.is_finished for r in runs):
                break
            time.sleep(1)
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(MISSIONS)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert len({r.tags["dagster/backfill"] for r in runs}) == 1
    for mission in MISSIONS:
        assert (tmp_path / "data" / "stage_a_summaries" / mission / "records.jsonl").stat().st_size > 0


def test_truncation_check_blocks_stage_b_when_too_many_summaries_are_cut(tiny_vlm_dir, sample_images, tmp_path):
    """Production thresholds (warn 1%, block 10%) on the smoke model, whose every answer hits the cap."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, MISSIONS)
        result = _run_stage_a_job(
            instance,
            _resources(tmp_path, sample_images, tiny_vlm_dir),
            MISSIONS[0],
            config={"max_new_tokens": 8},
            raise_on_error=False,
        )
        check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "stage_a_truncation_share")
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert check.metadata["actual_share"].value == 1.0 and check.metadata["blocking_above_share"].value == 0.1
        assert not result.success  # a blocking check at ERROR fails the run: Stage-B would not start


def test_truncation_share_warns_between_the_thresholds_and_passes_below(tiny_vlm_dir, sample_images, tmp_path):
    resources = _resources(tmp_path, sample_images, tiny_vlm_dir)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, MISSIONS)
        _run_stage_a_job(
            instance,
            resources,
            MISSIONS[0],
            config={"max_new_tokens": 8, "max_truncated_share": 0.01, "max_truncated_share_blocking": 0.5},
            raise_on_error=False,
        )  # every answer is cut: the run's own check blocks
    out = tmp_path / "data" / "stage_a_summaries" / MISSIONS[0]
    records = read_jsonl(out / "records.jsonl")
    total = sum(len(r["per_image"]) for r in records)

    def with_cut(n_cut: int):
        left = n_cut
        for r in records:
            r["truncated_images"] = min(left, len(r["per_image"]))
            left -= r["truncated_images"]
        atomic_write_jsonl(out / "records.jsonl", records)
        return truncation_share(resources["storage"], MISSIONS[0], "stage_a_summaries")

    everything = with_cut(total)  # as written by the run: every answer cut
    assert not everything.passed and everything.severity == dg.AssetCheckSeverity.ERROR
    some = with_cut(2)  # above 1%, below 50%: a warning, downstream runs
    assert not some.passed and some.severity == dg.AssetCheckSeverity.WARN
    assert with_cut(0).passed
