"""Selection logic on constructed teacher answers: every rejection reason, hard-case weighting,
preference pairs and the rationale budget."""

import pytest

from qc_assets.distill.config import DistillConfig
from qc_assets.distill.select import (
    REJECT_REASONS,
    hard_records,
    judge_answers,
    majority_wrong_records,
    preference_pairs,
    reason_counts,
)

PASS_OK = "通过\n理由: 挡风板齐全"
FAIL_OK = "不通过\n理由: 缺少挡风板"


def answer(record_id: str, label: str, sample: int, raw: str | None, error: str | None = None) -> dict:
    return {
        "record_id": record_id,
        "group_id": record_id.split("/")[-1],
        "label": label,
        "sample": sample,
        "seed": 100 + sample,
        "raw": raw,
        "error": error,
    }


def test_every_rejection_reason_and_the_kept_answer():
    config = DistillConfig(max_reason_chars=10)
    answers = [
        answer("r/g1", "pass", 0, "通过\n理由：挡风板齐全"),  # full-width colon: kept, canonicalised
        answer("r/g1", "pass", 1, None, error="HTTP 500"),
        answer("r/g1", "pass", 2, "assistant: 通过"),
        answer("r/g1", "pass", 3, FAIL_OK),
        answer("r/g1", "pass", 4, "通过\n理由: " + "挡" * 11),
        answer("r/g1", "pass", 5, "通过\n理由: 挡风板齐全 "),  # same answer as sample 0 after canonicalising
        {**answer("r/g1", "pass", 6, "通过\n理由: 挡风板"), "finish_reason": "length"},  # cut by the token limit
    ]
    judged = judge_answers(answers, config)
    assert [j.reason for j in judged] == [
        None,
        "teacher_error",
        "format_bad",
        "label_mismatch",
        "reason_too_long",
        "duplicate_answer",
        "truncated",
    ]
    kept = judged[0]
    assert kept.text == PASS_OK and kept.verdict == "pass" and kept.rationale == "挡风板齐全"
    # A failed request is never parsed: no verdict, no text.
    assert judged[1].verdict is None and judged[1].text is None
    counts = reason_counts(judged)
    assert set(counts) == set(REJECT_REASONS) and sum(counts.values()) == 6 and counts["not_selected"] == 0


def test_the_word_pass_is_not_matched_inside_fail():
    (j,) = judge_answers([answer("r/g2", "pass", 0, "不通过\n理由: 缺少螺丝")], DistillConfig())
    assert j.reason == "label_mismatch" and j.verdict == "fail"


def test_rationale_budget_applies_only_with_the_short_rationale_recipe():
    long_answer = [answer("r/g1", "fail", 0, "不通过\n理由: " + "缺" * 30)]
    assert judge_answers(long_answer, DistillConfig(max_reason_chars=30))[0].kept  # exactly at the budget
    assert judge_answers(long_answer, DistillConfig(max_reason_chars=29))[0].reason == "reason_too_long"
    assert judge_answers(long_answer, DistillConfig(max_reason_chars=29, short_rationale=False))[0].kept


def test_multi_sample_off_keeps_the_first_accepted_sample_only():
    answers = [
        answer("r/g1", "fail", 1, "不通过\n理由: 缺少螺丝"),
        answer("r/g1", "fail", 0, FAIL_OK),
        answer("r/g1", "fail", 2, "不通过\n理由: 设备倾斜"),
    ]
    on = judge_answers(answers, DistillConfig())
    off = judge_answers(answers, DistillConfig(multi_sample=False))
    assert [j.kept for j in on] == [True, True, True]
    # Judged in sample order whatever the input order; results come back in input order.
    assert [j.reason for j in off] == ["not_selected", None, "not_selected"]


def test_majority_wrong_uses_only_the_kept_guidance_and_counts_no_valid_verdict_as_wrong():
    rows = [
        {"guidance_hash": "h1", "record_id": "a", "label": "pass", "verdict": "fail", "error": None},
        {"guidance_hash": "h1", "record_id": "a", "label": "pass", "verdict": "pass", "error": None},  # tie -> fail
        {"guidance_hash": "h1", "record_id": "b", "label": "fail", "verdict": "fail", "error": None},
        {"guidance_hash": "h1", "record_id": "c", "label": "pass", "verdict": None, "error": None},
        {"guidance_hash": "h1", "record_id": "d", "label": "pass", "verdict": None, "error": "timeout"},
        {"guidance_hash": "h0", "record_id": "b", "label": "fail", "verdict": "pass", "error": None},
    ]
    assert majority_wrong_records(rows, "h1") == {"a", "c"}
    assert majority_wrong_records(rows, "h0") == {"b"}


def test_hard_case_weighting_flags():
    records = [
        {"record_id": "p1", "label": "pass"},
        {"record_id": "p2", "label": "pass"},
        {"record_id": "f1", "label": "fail"},
    ]
    wrong = {"p2"}
    assert hard_records(records, wrong, DistillConfig()) == {"p2", "f1"}  # marked; fusion weighs them
    assert hard_records(records, wrong, DistillConfig(hard_fail_groups=False)) == {"p2"}
    assert hard_records(records, wrong, DistillConfig(hard_majority_wrong=False)) == {"f1"}
    with pytest.raises(TypeError, match="hard_case_factor"):  # moved to the fusion config's sources
        DistillConfig(hard_case_factor=3)


def test_preference_pairs_pair_correct_with_incorrect_answers_of_the_same_group():
    answers = [
        answer("r/g1", "fail", 0, FAIL_OK),
        answer("r/g1", "fail", 1, PASS_OK),  # label mismatch
        answer("r/g1", "fail", 2, "随便说说"),  # broken format
        answer("r/g1", "fail", 3, None, error="timeout"),  # never paired
        answer("r/g1", "fail", 4, PASS_OK),  # same wrong answer again: one pair only
        answer("r/g2", "pass", 0, FAIL_OK),  # wrong, but the group has no correct answer: no pair
    ]
    pairs = preference_pairs(judge_answers(answers, DistillConfig()))
    assert [(p.chosen.answer["sample"], p.rejected.answer["sample"], p.rejected.reason) for p in pairs] == [
        (0, 1, "label_mismatch"),
        (0, 2, "format_bad"),
    ]
    assert pairs[0].chosen.text == FAIL_OK and pairs[0].rejected_text == PASS_OK
    assert pairs[1].rejected_text == "随便说说"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"top_p": 0.0}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"guidance": "latest"}, "guidance"),
        ({"min_label_share": 0.7}, "min_label_share"),
        ({"temperature": 0.0, "n_samples": 3}, "temperature=0"),
    ],
)
def test_config_validation_names_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig(**kwargs)


def test_an_answer_without_a_valid_label_is_refused():
    with pytest.raises(ValueError, match="label must be"):
        judge_answers([answer("r/g1", "unknown", 0, PASS_OK)], DistillConfig())
