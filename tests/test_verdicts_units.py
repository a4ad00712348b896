"""Production verdict logic on plain code: one row per inbox group, needs_review, caching, re-judging,
the review loop, and the table schema. The verdict LLM here is ScriptedVerdictLLM, a test double."""

import hashlib
import shutil
from dataclasses import fields

import pandera.errors
import polars as pl
import pytest
from support.verdicts import (
    BROKEN,
    FAIL,
    MISSION,
    PASS,
    PROVIDER_DOWN,
    ScriptedVerdictLLM,
    guidance_versions,
    inbox_record,
)

from qc_assets.missions import get_mission
from qc_assets.stage_a.discovery import INBOX_FOLDER, INBOX_SKIP_REASON, discover
from qc_assets.stage_b.config import StageBLoopConfig
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.reviews import agreement_by_day, inbox_group_ids
from qc_assets.verdicts.run import NO_RECORD_REASON, inbox_groups, run_verdicts
from qc_assets.verdicts.table import read_table, validate_verdicts, verdict_frame
from resources.store import read_jsonl

SAMPLED = VerdictConfig(decode_grid=((0.7, 0.9),), samples=4, min_agreement=0.75)


def _run(records, llm, tmp_path, guidance=None, config=SAMPLED, inbox_ids=None):
    guidance = guidance or guidance_versions()[0]
    ids = dict.fromkeys(inbox_ids if inbox_ids is not None else [r["group_id"] for r in records], 0)
    return run_verdicts(
        records,
        ids,
        get_mission(MISSION),
        guidance,
        llm,
        config,
        tmp_path / "out",
        tmp_path / "images" / MISSION,
        log=lambda _: None,
    )


def _by_group(result):
    return {r["group_id"]: r for r in result.pending}


def test_every_inbox_group_gets_exactly_one_row_including_unsummarised_ones(tmp_path):
    llm = ScriptedVerdictLLM({"alpha": [PASS], "bravo": [FAIL]})
    result = _run(
        [inbox_record("alpha"), inbox_record("bravo")], llm, tmp_path, inbox_ids=["alpha", "bravo", "charlie"]
    )
    rows = _by_group(result)
    assert sorted(rows) == ["alpha", "bravo", "charlie"] and len(result.pending) == 3
    assert rows["alpha"]["verdict"] == "pass" and not rows["alpha"]["needs_review"]
    assert rows["bravo"]["verdict"] == "fail" and rows["bravo"]["reason"] == "缺少接地线"
    assert rows["charlie"]["verdict"] is None and rows["charlie"]["needs_review"]
    assert rows["charlie"]["review_reason"] == NO_RECORD_REASON
    validate_verdicts(verdict_frame(result.rows))


def test_broken_answers_low_agreement_and_provider_failure_each_need_review(tmp_path):
    llm = ScriptedVerdictLLM(
        {
            "alpha": [PASS] * 4,
            "bravo": [PASS, PASS, FAIL, FAIL],  # a tie: fail wins, agreement 0.5
            "charlie": [PASS, PASS, PASS, BROKEN],
            "delta": [PASS, PASS, PASS, PROVIDER_DOWN],
            "echo": [BROKEN] * 4,
        }
    )
    result = _run([inbox_record(g) for g in ("alpha", "bravo", "charlie", "delta", "echo")], llm, tmp_path)
    rows = _by_group(result)
    assert not rows["alpha"]["needs_review"] and rows["alpha"]["agreement"] == 1.0
    assert rows["bravo"]["verdict"] == "fail" and rows["bravo"]["needs_review"]
    assert "agreement 0.50 below 0.75" in rows["bravo"]["review_reason"]
    assert rows["charlie"]["needs_review"] and not rows["charlie"]["format_ok"]
    assert "break the verdict contract" in rows["charlie"]["review_reason"]
    assert rows["delta"]["needs_review"] and "provider failed for 1/4" in rows["delta"]["review_reason"]
    assert rows["delta"]["n_failed"] == 1
    assert rows["echo"]["verdict"] is None and rows["echo"]["needs_review"]
    assert result.counts.failed == 1
    validate_verdicts(verdict_frame(result.rows))


def test_a_truncated_summary_sends_the_group_to_review_with_that_reason(tmp_path):
    # both groups get four unanimous, well-formed answers: only the cut summary can flag one
    llm = ScriptedVerdictLLM({"alpha": [PASS] * 4, "bravo": [PASS] * 4})
    result = _run([inbox_record("alpha"), inbox_record("bravo", truncated=True)], llm, tmp_path)
    rows = _by_group(result)
    assert not rows["alpha"]["needs_review"]
    assert rows["bravo"]["verdict"] == "pass" and rows["bravo"]["needs_review"]
    assert "truncated at max_new_tokens for 1/1 photos (image_1)" in rows["bravo"]["review_reason"]
    validate_verdicts(verdict_frame(result.rows))


def test_records_from_before_truncation_counting_are_refused(tmp_path):
    old = inbox_record("alpha")
    del old["truncated_images"]
    with pytest.raises(ValueError, match="re-materialize inbox_summaries"):
        _run([old], ScriptedVerdictLLM({"alpha": [PASS] * 4}), tmp_path)


def test_a_rerun_makes_zero_llm_calls_and_a_failed_request_is_retried(tmp_path):
    records = [inbox_record("alpha"), inbox_record("bravo")]
    first = ScriptedVerdictLLM({"alpha": [PASS], "bravo": [FAIL, PROVIDER_DOWN, FAIL, FAIL]})
    _run(records, first, tmp_path)
    assert first.calls == 8
    again = ScriptedVerdictLLM({"alpha": [PASS], "bravo": [FAIL]})
    result = _run(records, again, tmp_path)
    assert again.calls == 1  # only bravo's failed sample is asked again
    assert not _by_group(result)["bravo"]["needs_review"]
    third = ScriptedVerdictLLM({"alpha": [PASS], "bravo": [FAIL]})
    result = _run(records, third, tmp_path)
    assert third.calls == 0 and result.counts.cached == 8
    assert result.unchanged == 2 and result.newly_judged == 0 and not result.rejudged


def test_a_new_guidance_version_or_model_rejudges_and_says_why(tmp_path):
    g0, g1 = guidance_versions()
    records = [inbox_record("alpha"), inbox_record("bravo")]
    _run(records, ScriptedVerdictLLM({"alpha": [PASS], "bravo": [FAIL]}), tmp_path, guidance=g0)
    g1 = g1.__class__(mission=g1.mission, items=g1.items, next_learned=g1.next_learned, version=1)
    llm = ScriptedVerdictLLM({"alpha": [FAIL], "bravo": [FAIL]})
    result = _run(records, llm, tmp_path, guidance=g1)
    assert llm.calls == 8
    assert dict(result.rejudged) == {"guidance v0 -> v1": 2}
    assert _by_group(result)["alpha"]["verdict"] == "fail" and _by_group(result)["alpha"]["guidance_version"] == 1
    other = ScriptedVerdictLLM({"alpha": [FAIL], "bravo": [FAIL]}, fingerprint="scripted-llm-v2")
    result = _run(records, other, tmp_path, guidance=g1)
    assert other.calls == 8 and dict(result.rejudged) == {"new model": 2}


def _photo(tmp_path, folder: str, group: str, data: bytes) -> str:
    path = tmp_path / "images" / MISSION / folder / group / "1.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_moving_a_judged_group_to_a_label_folder_records_agreement_once(tmp_path):
    sha_a = _photo(tmp_path, INBOX_FOLDER, "alpha", b"photo-alpha")
    sha_b = _photo(tmp_path, INBOX_FOLDER, "bravo", b"photo-bravo")
    _photo(tmp_path, "审核通过", "charlie", b"an older group that shares the id")
    sha_c = _photo(tmp_path, INBOX_FOLDER, "charlie", b"photo-charlie")
    llm = ScriptedVerdictLLM({"alpha": [FAIL], "bravo": [PASS], "charlie": [PASS]})
    records = [inbox_record("alpha", sha_a), inbox_record("bravo", sha_b), inbox_record("charlie", sha_c)]
    _run(records, llm, tmp_path)
    # the reviewer fails alpha and bravo; charlie's inbox folder is deleted without a decision
    inbox = tmp_path / "images" / MISSION / INBOX_FOLDER
    for group in ("alpha", "bravo"):
        (tmp_path / "images" / MISSION / "审核不通过").mkdir(exist_ok=True)
        shutil.move(inbox / group, tmp_path / "images" / MISSION / "审核不通过" / group)
    shutil.rmtree(inbox / "charlie")
    result = _run([], llm, tmp_path)
    rows = {r["group_id"]: r for r in result.rows}
    assert rows["alpha"]["status"] == "reviewed" and rows["alpha"]["agrees_with_reviewer"] is True
    assert rows["bravo"]["status"] == "reviewed" and rows["bravo"]["agrees_with_reviewer"] is False
    assert rows["bravo"]["reviewer_label"] == "fail"
    assert rows["charlie"]["status"] == "withdrawn"  # same id under 审核通过, but other photos
    assert result.new_reviews == 2 and result.pending == []
    per_day = agreement_by_day(result.reviews)
    assert [(d["reviews"], d["agreed"], d["agreement"]) for d in per_day] == [(2, 1, 0.5)]
    again = _run([], llm, tmp_path)
    assert again.new_reviews == 0 and len(read_jsonl(tmp_path / "out" / "reviews.jsonl")) == 2
    assert {r["group_id"]: r["status"] for r in read_table(tmp_path / "out")} == {
        "alpha": "reviewed",
        "bravo": "reviewed",
        "charlie": "withdrawn",
    }
    validate_verdicts(verdict_frame(again.rows))


def test_a_ticket_in_suffixed_inbox_folders_is_one_group_and_its_review_is_found(tmp_path):
    ticket = "QC-BBU-20250101-12"
    sha_1 = _photo(tmp_path, INBOX_FOLDER, f"{ticket}_补拍", b"first visit")
    sha_2 = _photo(tmp_path, INBOX_FOLDER, f"{ticket} (2)", b"second visit")
    assert inbox_group_ids(tmp_path / "images", MISSION) == [ticket]
    skipped = [{"path": f"{INBOX_FOLDER}/{ticket} (2)/x.txt", "reason": "not an image file"}]
    assert inbox_groups([], skipped) == {ticket: 1}
    record = {**inbox_record(ticket), "image_sha256": [sha_2, sha_1]}
    _run([record], ScriptedVerdictLLM({ticket: [PASS]}), tmp_path, inbox_ids=[ticket])
    # the reviewer files both folders, suffixes and all, under 审核通过
    for name in (f"{ticket}_补拍", f"{ticket} (2)"):
        (tmp_path / "images" / MISSION / "审核通过").mkdir(exist_ok=True)
        shutil.move(
            tmp_path / "images" / MISSION / INBOX_FOLDER / name, tmp_path / "images" / MISSION / "审核通过" / name
        )
    rows = {r["group_id"]: r for r in _run([], ScriptedVerdictLLM({}), tmp_path, inbox_ids=[]).rows}
    assert rows[ticket]["status"] == "reviewed" and rows[ticket]["reviewer_label"] == "pass"


def test_schema_fails_on_a_silent_pass_a_null_verdict_and_a_duplicate(tmp_path):
    result = _run(
        [inbox_record("alpha"), inbox_record("bravo")], ScriptedVerdictLLM({"alpha": [PASS], "bravo": [FAIL]}), tmp_path
    )
    frame = verdict_frame(result.rows)
    validate_verdicts(frame)
    bad = [
        frame.with_columns(pl.lit(False).alias("format_ok")),  # unflagged but broken
        frame.with_columns(pl.lit(None, pl.Utf8).alias("verdict")),  # no verdict, not flagged
        frame.with_columns(pl.lit(True).alias("needs_review")),  # flagged without a reason
        pl.concat([frame, frame]),  # one group twice
        frame.with_columns(pl.lit("通过").alias("verdict")),
    ]
    for broken in bad:
        with pytest.raises(pandera.errors.SchemaErrors):
            validate_verdicts(broken)


def test_inbox_groups_from_summaries_include_fully_skipped_groups():
    records = [inbox_record("alpha")]
    skipped = [
        {"path": f"{INBOX_FOLDER}/bravo", "reason": "group has no usable images"},
        {"path": f"{INBOX_FOLDER}/bravo/1.jpg", "reason": "zero-byte file"},
        {"path": f"{INBOX_FOLDER}/note.txt", "reason": "file outside a group folder"},
    ]
    assert inbox_groups(records, skipped) == {"alpha": 0, "bravo": 1}


def test_a_group_with_an_unusable_photo_goes_to_review_even_with_a_clean_verdict(tmp_path):
    """Partial evidence: one good photo gives a unanimous pass, but the zero-byte photo beside it was
    never looked at, so the group is not passed silently."""
    records = [inbox_record("alpha"), inbox_record("bravo")]
    skipped = [{"path": f"{INBOX_FOLDER}/alpha/2.jpg", "reason": "zero-byte file"}]
    llm = ScriptedVerdictLLM({"alpha": [PASS], "bravo": [PASS]})
    result = run_verdicts(
        records,
        inbox_groups(records, skipped),
        get_mission(MISSION),
        guidance_versions()[0],
        llm,
        SAMPLED,
        tmp_path / "out",
        tmp_path / "images" / MISSION,
        log=lambda _: None,
    )
    rows = _by_group(result)
    assert rows["alpha"]["verdict"] == "pass" and rows["alpha"]["agreement"] == 1.0
    assert rows["alpha"]["needs_review"] and "1 of 2 photos unusable" in rows["alpha"]["review_reason"]
    assert not rows["bravo"]["needs_review"] and rows["bravo"]["review_reason"] is None


def test_decode_defaults_equal_stage_b_scoring_defaults():
    stage_b, ours = StageBLoopConfig(), VerdictConfig()
    for name in ("decode_grid", "samples", "seed", "max_new_tokens", "constrained"):
        assert getattr(ours, name) == getattr(stage_b, name), name
    assert {f.name for f in fields(VerdictConfig)} >= {"verdict_model", "min_agreement"}
    with pytest.raises(ValueError, match="verdict_model"):
        VerdictConfig(verdict_model="student")


def test_labelled_discovery_lists_the_inbox_and_inbox_discovery_sees_only_it(sample_images):
    labelled = discover(sample_images, MISSION)
    assert all(g.label in ("pass", "fail") for g in labelled.groups)
    assert (INBOX_FOLDER, INBOX_SKIP_REASON) in {(s.path, s.reason) for s in labelled.skipped}
    inbox = discover(sample_images, MISSION, inbox=True)
    assert inbox.groups and all(g.label is None for g in inbox.groups)
    assert {g.group_id for g in inbox.groups}.isdisjoint({g.group_id for g in labelled.groups})
    assert all(img.path.startswith(f"{INBOX_FOLDER}/") for g in inbox.groups for img in g.images)
