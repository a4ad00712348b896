"""Drift watch: agreement with reviewers over a window, against what the kept guidance promised."""

import json

import dagster as dg
import pytest

from qc_assets.verdicts.checks import agreement_holds
from qc_assets.verdicts.config import VerdictConfig
from qc_assets.verdicts.drift import DriftSettings, drift_state, wilson_interval
from resources.storage import StorageResource
from resources.store import atomic_write_json, atomic_write_jsonl

MISSION = "BBU接地线检查"
SETTINGS = DriftSettings(window_reviews=50, window_days=None, min_reviews=20, drift_margin=0.05)


def reviews(agree: int, disagree: int, start: float = 1_000_000.0, version: int = 1) -> list[dict]:
    out = []
    for i in range(agree + disagree):
        ok = i < agree
        out.append(
            {
                "group_id": f"g{i:03d}",
                "verdict": "pass",
                "reviewer_label": "pass" if ok else "fail",
                "agrees": ok,
                "needs_review": i % 5 == 0,
                "guidance_version": version,
                "reason": "螺丝齐全",
                "first_seen_at": start + i,
            }
        )
    return out


def result(conclusive: bool, kept_accuracy: float = 0.9) -> dict:
    test = {"conclusive": conclusive, "n_groups": 40 if conclusive else 5, "kept_accuracy": kept_accuracy}
    return {"run_id": "run-0002", "kept_version": 1, "test": test}


def test_wilson_interval_matches_the_closed_form_and_is_wide_on_little_data():
    low, high = wilson_interval(45, 50)
    assert (round(low, 3), round(high, 3)) == (0.786, 0.957)
    assert wilson_interval(3, 3)[0] < 0.5, "3 of 3 says little"
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_holds_on_good_agreement_and_drifts_when_the_upper_bound_falls_below_the_baseline():
    good = drift_state(reviews(46, 4), result(True), SETTINGS)
    assert not good["drifted"] and good["status"].startswith("holds")
    bad = drift_state(reviews(30, 20), result(True), SETTINGS)
    assert bad["drifted"] and bad["baseline"] == 0.9 and bad["baseline_source"].startswith("Stage-B test split")
    assert len(bad["recent_disagreements"]) == 10 and bad["recent_disagreements"][0]["group_id"] == "g049"
    assert bad["needs_review_overturned"] + bad["needs_review_confirmed"] == bad["needs_review_in_window"] == 10


def test_never_a_conclusion_below_min_reviews():
    state = drift_state(reviews(0, 3), result(True), SETTINGS)
    assert not state["drifted"] and state["status"] == "not enough reviews yet (3 < 20)"


def test_an_inconclusive_test_falls_back_to_the_first_full_window_under_the_kept_guidance():
    first = reviews(48, 2)  # the first 50 reviews under v1: 0.96
    later = reviews(25, 25, start=2_000_000.0)
    state = drift_state(first + later, result(False), SETTINGS)
    assert state["baseline"] == 0.96 and state["baseline_source"] == "first 50 reviews under guidance v1"
    assert state["drifted"] and state["window_reviews"] == 50
    too_few = drift_state(reviews(20, 2), result(False), SETTINGS)
    assert not too_few["drifted"] and too_few["status"].startswith("no baseline")


def test_a_day_window_keeps_only_recent_reviews():
    old, recent = reviews(10, 0, start=0.0), reviews(5, 20, start=10 * 86400.0)
    state = drift_state(old + recent, result(True), DriftSettings(50, 2.0, 20, 0.05), now=11 * 86400.0)
    assert state["window_reviews"] == 25 and state["drifted"]


@pytest.mark.parametrize("severity", ["WARN", "ERROR"])
def test_the_check_fails_on_drifted_reviews_with_the_configured_severity(tmp_path, severity):
    storage = StorageResource(data_root=str(tmp_path))
    out = storage.asset_dir("qc_verdicts", MISSION)
    config = VerdictConfig(window_reviews=50, min_reviews=20, drift_severity=severity)
    atomic_write_json(out / "summary.json", {"config": config.to_dict()})
    atomic_write_json(storage.asset_dir("stage_b_guidance", MISSION) / "result.json", result(True))
    atomic_write_jsonl(out / "reviews.jsonl", reviews(46, 4))
    assert agreement_holds(storage, MISSION).passed
    atomic_write_jsonl(out / "reviews.jsonl", reviews(46, 4) + reviews(20, 30, start=3_000_000.0))
    check = agreement_holds(storage, MISSION)
    assert not check.passed and check.severity == dg.AssetCheckSeverity[severity]
    assert check.metadata["baseline"].value == 0.9 and check.metadata["window_reviews"].value == 50
    assert "g049" in check.metadata["recent_disagreements"].value
    assert json.loads(json.dumps(config.to_dict()))["drift_margin"] == 0.05


def test_the_sample_reviewer_files_only_groups_already_under_a_label_and_a_rewrite_does_not_resend_them(tmp_path):
    from qc_assets.cli.sample_data import review_sample_inbox, write_sample_images
    from qc_assets.stage_a.discovery import INBOX_FOLDER

    root = write_sample_images(tmp_path / "images", groups_per_label=1, reviewed_groups=2)
    inbox = root / MISSION / INBOX_FOLDER
    assert {p.name for p in inbox.iterdir()} == {"N500", "N501", "R600", "R601"}
    assert (root / MISSION / "审核通过" / "R600").is_dir() and (root / MISSION / "审核不通过" / "R601").is_dir()
    reviewed = review_sample_inbox(root)
    assert f"{MISSION}/R600" in reviewed and {p.name for p in inbox.iterdir()} == {"N500", "N501"}
    write_sample_images(root, groups_per_label=1, reviewed_groups=2)
    assert {p.name for p in inbox.iterdir()} == {"N500", "N501"}, "a reviewed group is not sent again"
    assert review_sample_inbox(root) == []
