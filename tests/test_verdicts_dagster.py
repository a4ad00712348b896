"""inbox_summaries -> qc_verdicts on a real Dagster instance (tiny real VLM, embedded SmolLM2 as the
verdict LLM), isolation of inbox records from training inputs, and each verdict check failing on bad data."""

import shutil

import dagster as dg
import polars as pl
import pytest
from support.llm import TEST_THREADS
from support.stage_a_smoke import SMOKE_STAGE_A
from support.verdicts import (
    BROKEN,
    MISSION,
    PASS,
    ScriptedVerdictLLM,
    guidance_versions,
    inbox_record,
    store_kept_guidance,
)

from qc_assets.missions import get_mission
from qc_assets.partitions import mission_partitions
from qc_assets.stage_a.assets import load_stage_a_records, stage_a_summaries
from qc_assets.stage_a.checks import asset_checks as stage_a_checks
from qc_assets.stage_a.discovery import INBOX_FOLDER, discover
from qc_assets.stage_a.runner import StageAConfig
from qc_assets.student.config import SourceConfig
from qc_assets.student.sources import load_source
from qc_assets.verdicts.assets import qc_verdicts
from qc_assets.verdicts.checks import asset_checks, needs_review_share, one_row_per_inbox_group, verdicts_schema
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.inbox import inbox_summaries
from qc_assets.verdicts.run import run_verdicts
from resources.llm.resource import LLMResource
from resources.storage import StorageResource
from resources.store import atomic_write_json, atomic_write_jsonl, read_jsonl
from resources.vlm.resource import VLMResource


def _materialize(instance, resources, assets):
    config = {
        a.key.to_user_string(): {"config": SMOKE_STAGE_A} for a in assets if a in (stage_a_summaries, inbox_summaries)
    }
    return dg.materialize(
        [*assets, *stage_a_checks, *asset_checks],
        partition_key=MISSION,
        instance=instance,
        resources=resources,
        selection=assets,
        run_config={"ops": config},
    )


def _meta(result, asset="qc_verdicts"):
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_inbox_to_verdicts_on_a_real_instance_reruns_rejudges_and_closes_reviews(tiny_vlm_dir, sample_images, tmp_path):
    data = tmp_path / "data"
    storage = StorageResource(data_root=str(data), images_root=str(sample_images))
    resources = {
        "storage": storage,
        "vlm": VLMResource(model_path=str(tiny_vlm_dir)),
        "llm": LLMResource(cpu_threads=TEST_THREADS),
    }
    g0, g1 = guidance_versions()
    store_kept_guidance(data, g0)
    inbox_ids = sorted(p.name for p in (sample_images / MISSION / INBOX_FOLDER).iterdir())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(mission_partitions.name, [MISSION])
        first = _materialize(instance, resources, [stage_a_summaries, inbox_summaries, qc_verdicts])
        assert first.success
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks["qc_verdicts_schema"] and checks["qc_verdicts_one_row_per_inbox_group"]
        assert checks["inbox_schema"] and checks["inbox_images_accounted"] and checks["stage_a_images_accounted"]
        # every smoke answer is cut: the inbox check warns (without blocking) and each group goes to review
        assert checks["inbox_truncation_share"] is False
        assert (
            _meta(first, "inbox_summaries")["inbox/truncated_images"]
            == _meta(first, "inbox_summaries")["inbox/images_summarised"]
            > 0
        )
        assert _meta(first)["verdicts/needs_review"] == 2
        meta = _meta(first)
        assert meta["dagster/row_count"] == len(inbox_ids) == 2
        assert meta["verdicts/llm_calls"] == 2 and meta["verdicts/newly_judged"] == 2
        assert len(meta["preview"]) <= 500 and meta["guidance_version"] == 0
        table = pl.read_parquet(data / "qc_verdicts" / MISSION / "verdicts.parquet")
        assert sorted(table["group_id"]) == inbox_ids and set(table["status"]) == {"pending"}
        # the column schema reported is the written file's, column by column
        assert [(c.name, c.type) for c in meta["dagster/column_schema"].columns] == [
            (name, str(dtype)) for name, dtype in table.schema.items()
        ]
        assert {"group_id", "verdict", "guidance_hash"} <= {c.name for c in meta["dagster/column_schema"].columns}
        assert set(table["model_fingerprint"]) == {meta["model_fingerprint"]} and set(table["guidance_hash"]) == {
            g0.content_hash()
        }
        csv = (data / "qc_verdicts" / MISSION / "verdicts.csv").read_bytes()
        assert csv.startswith(b"\xef\xbb\xbf") and "guidance_hash" in csv.decode("utf-8-sig").splitlines()[0]

        # inbox records never reach the training inputs (Stage-B and distillation load via
        # load_stage_a_records, fusion via load_source)
        inbox_records = read_jsonl(data / "inbox_summaries" / MISSION / "records.jsonl")
        assert {r["group_id"] for r in inbox_records} == set(inbox_ids) and {r["label"] for r in inbox_records} == {
            None
        }
        labelled = load_stage_a_records(storage, MISSION)
        assert not {r["group_id"] for r in labelled} & set(inbox_ids)
        assert all(not p.startswith(INBOX_FOLDER) for r in labelled for p in r["images"])
        fusion = load_source(
            SourceConfig(name="s", type="stage_a_summaries"),
            mission=MISSION,
            data_root=data,
            images_root=sample_images,
            exclude_groups=set(),
        )
        assert fusion.examples and not {e["group_id"] for e in fusion.examples} & set(inbox_ids)

        again = _materialize(instance, resources, [inbox_summaries, qc_verdicts])
        assert _meta(again)["verdicts/llm_calls"] == 0 and _meta(again)["verdicts/unchanged"] == 2
        assert _meta(again, "inbox_summaries")["inbox/images_generated_this_run"] == 0

        store_kept_guidance(data, g1, parent=0)
        rejudged = _meta(_materialize(instance, resources, [qc_verdicts]))
        assert rejudged["verdicts/rejudged"] == 2 and rejudged["verdicts/llm_calls"] == 2
        assert "guidance v0 -> v1" in rejudged["rejudged_reasons"] and rejudged["guidance_version"] == 1

        # the reviewer files one judged group under 审核通过: a review, and labelled data for Stage-A
        shutil.move(
            sample_images / MISSION / INBOX_FOLDER / inbox_ids[0], sample_images / MISSION / "审核通过" / inbox_ids[0]
        )
        reviewed = _materialize(instance, resources, [inbox_summaries, qc_verdicts])
        meta = _meta(reviewed)
        assert meta["dagster/row_count"] == 1 and meta["verdicts/reviews_new"] == 1
        assert meta["verdicts/llm_calls"] == 0 and "reviewer_agreement_plot" in meta
        row = (
            pl.read_parquet(data / "qc_verdicts" / MISSION / "verdicts.parquet")
            .filter(pl.col("group_id") == inbox_ids[0])
            .to_dicts()[0]
        )
        assert row["status"] == "reviewed" and row["reviewer_label"] == "pass"
        assert row["agrees_with_reviewer"] == (row["verdict"] == "pass")
        # ...and the next Stage-A run finds it as a labelled group
        assert ("pass", inbox_ids[0]) in {(g.label, g.group_id) for g in discover(sample_images, MISSION).groups}


def test_load_stage_a_records_refuses_unlabelled_records(tmp_path):
    storage = StorageResource(data_root=str(tmp_path / "data"))
    atomic_write_jsonl(
        storage.asset_dir("stage_a_summaries", MISSION) / "records.jsonl", [{"group_id": "N500", "label": None}]
    )
    with pytest.raises(ValueError, match="without a pass/fail label"):
        load_stage_a_records(storage, MISSION)


def _judge(storage, records, llm, inbox_ids):
    return run_verdicts(
        records,
        dict.fromkeys(inbox_ids, 0),
        get_mission(MISSION),
        guidance_versions()[0],
        llm,
        VerdictConfig(max_needs_review_share=0.5),
        storage.asset_dir("qc_verdicts", MISSION),
        storage.images() / MISSION,
        log=lambda _: None,
    )


def test_each_verdict_check_fails_on_bad_data(tmp_path):
    images = tmp_path / "images"
    for group in ("alpha", "bravo"):
        (images / MISSION / INBOX_FOLDER / group).mkdir(parents=True)
    storage = StorageResource(data_root=str(tmp_path / "data"), images_root=str(images))
    # what inbox_summaries writes beside its records: the settings the group ids were read with
    atomic_write_json(storage.asset_dir("inbox_summaries", MISSION) / "run.json", {"config": StageAConfig().to_dict()})
    records = [inbox_record("alpha"), inbox_record("bravo")]
    _judge(storage, records, ScriptedVerdictLLM({"alpha": [PASS], "bravo": [PASS]}), ["alpha", "bravo"])
    assert verdicts_schema(storage, MISSION).passed
    assert one_row_per_inbox_group(storage, MISSION).passed
    assert needs_review_share(storage, MISSION).passed

    (images / MISSION / INBOX_FOLDER / "charlie").mkdir()  # arrived after the run: no row yet
    late = one_row_per_inbox_group(storage, MISSION)
    assert not late.passed and late.metadata["missing"].value == "charlie"

    path = tmp_path / "data" / "qc_verdicts" / MISSION / "verdicts.parquet"
    good = pl.read_parquet(path)
    pl.concat([good, good]).write_parquet(path)  # one group twice
    assert not verdicts_schema(storage, MISSION).passed
    assert "duplicated" in one_row_per_inbox_group(storage, MISSION).metadata
    assert one_row_per_inbox_group(storage, MISSION).metadata["duplicated"].value == "alpha, bravo"
    good.with_columns(pl.lit(None, pl.Utf8).alias("verdict")).write_parquet(path)  # null verdicts, not flagged
    assert not verdicts_schema(storage, MISSION).passed

    _judge(
        storage,
        records,
        ScriptedVerdictLLM({"alpha": [BROKEN], "bravo": [BROKEN]}, fingerprint="other"),
        ["alpha", "bravo"],
    )
    share = needs_review_share(storage, MISSION)
    assert not share.passed and share.metadata["actual_share"].value == 1.0
    assert share.severity == dg.AssetCheckSeverity.WARN
