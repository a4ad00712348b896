"""The gate and the eval veto as pure functions over constructed per-group outcomes."""

import pytest

from qc_assets.stage_b.aggregate import GroupOutcome, accuracy, false_release_rate, majority
from qc_assets.stage_b.gate import GateThresholds, choose_edit, eval_veto, gate, gate_still_possible


def test_majority_fail_wins_ties_and_invalid_votes_do_not_count():
    assert majority(["pass", "fail"]).predicted == "fail"
    assert majority(["pass", "pass", "fail", "fail", None]).predicted == "fail"
    vote = majority(["pass", "pass", "fail", None])
    assert (vote.predicted, vote.n_invalid) == ("pass", 1)
    assert vote.agreement == pytest.approx(2 / 3)
    empty = majority([None, None])
    assert (empty.predicted, empty.agreement) == (None, 0.0)


def outcomes(labels: str, preds: str) -> list[GroupOutcome]:
    """labels/preds as strings of p/f (pred may be '-' for no valid verdict)."""
    m = {"p": "pass", "f": "fail", "-": None}
    pairs = enumerate(zip(labels, preds, strict=True))
    return [GroupOutcome(f"r{i:02d}", f"g{i:02d}", m[label], m[pred], 1.0) for i, (label, pred) in pairs]


def test_no_prediction_is_an_error_not_a_release():
    outs = outcomes("ff", "-p")
    assert accuracy(outs) == 0.0 and false_release_rate(outs) == 0.5


LABELS = "ffffppppppfp"
BASE = "ppppppppppfp"  # misses four fails: 4 errors, all false releases


def test_accept_when_every_threshold_holds():
    result = gate(outcomes(LABELS, BASE), outcomes(LABELS, "fffpppppppfp"), GateThresholds(), seed=0)
    assert result.accepted and result.reasons == ()
    assert (result.base_errors, result.cand_errors, result.fixed, result.broken) == (4, 1, 3, 0)
    assert result.relative_error_reduction == pytest.approx(0.75)
    assert result.changed_fraction == pytest.approx(3 / 12)
    assert result.bootstrap_prob > 0.9
    assert result.cand_false_release < result.base_false_release


def test_bootstrap_is_seeded():
    args = (outcomes(LABELS, BASE), outcomes(LABELS, "fppppfpppppp"), GateThresholds())
    assert gate(*args, seed=3).bootstrap_prob == gate(*args, seed=3).bootstrap_prob


@pytest.mark.parametrize(
    "cand, thresholds, reason",
    [
        # one fix out of four errors: 25% < 50% required
        ("fpppppppppfp", GateThresholds(min_relative_error_reduction=0.5), "relative error"),
        # fixes everything but flips too many verdicts
        ("ffffppppppfp", GateThresholds(max_changed_fraction=0.2), "changed fraction"),
        # one fix and one break on the pass side: no evidence of improvement
        ("fpppfpppppfp", GateThresholds(min_relative_error_reduction=0.0), "bootstrap"),
    ],
)
def test_reject_paths(cand, thresholds, reason):
    result = gate(outcomes(LABELS, BASE), outcomes(LABELS, cand), thresholds, seed=0)
    assert not result.accepted
    assert any(reason in r for r in result.reasons), result.reasons


def test_reject_when_false_release_rises_even_if_errors_fall():
    labels = "ffpppppp"
    base = "ffffffff"  # rejects everything: 6 errors, no false release
    cand = "pfpppppp"  # 1 error, but it releases a failing group
    result = gate(outcomes(labels, base), outcomes(labels, cand), GateThresholds(max_changed_fraction=1.0), seed=0)
    assert result.relative_error_reduction > 0.8 and result.bootstrap_prob > 0.9
    assert not result.accepted
    assert any("false-release" in r for r in result.reasons)
    tolerant = GateThresholds(max_changed_fraction=1.0, false_release_tolerance=0.5)
    assert gate(outcomes(labels, base), outcomes(labels, cand), tolerant, seed=0).accepted


def test_reject_when_baseline_is_perfect():
    result = gate(outcomes("fp", "fp"), outcomes("fp", "fp"), GateThresholds(min_relative_error_reduction=0), seed=0)
    assert not result.accepted and "baseline makes no errors" in result.reasons[0]


def test_gate_needs_paired_groups():
    with pytest.raises(ValueError, match="same groups"):
        gate(outcomes("ff", "ff"), outcomes("f", "f"), GateThresholds(), seed=0)


def test_eval_veto():
    labels = "ffpp"
    base = outcomes(labels, "fppp")
    assert not eval_veto(base, outcomes(labels, "ffpp"), GateThresholds()).vetoed
    worse = eval_veto(base, outcomes(labels, "fpfp"), GateThresholds())
    assert worse.vetoed and "eval accuracy fell" in worse.reasons[0]
    assert not eval_veto(base, outcomes(labels, "fpfp"), GateThresholds(max_eval_accuracy_drop=0.25)).vetoed
    released = eval_veto(outcomes(labels, "ffpf"), outcomes(labels, "fppp"), GateThresholds())
    assert released.vetoed and any("false-release" in r for r in released.reasons)


def test_gate_still_possible_stops_hopeless_candidates():
    base = outcomes(LABELS, BASE)
    th = GateThresholds(max_changed_fraction=0.25)
    assert gate_still_possible(base, outcomes(LABELS[:3], "fff"), th)
    # four changed verdicts out of twelve already exceed 25%
    assert not gate_still_possible(base, outcomes(LABELS[:6], "ffffff"), th)
    # the seen groups already hold more errors (5) than the baseline makes on the whole pool (4)
    assert not gate_still_possible(base, outcomes(LABELS[:5], "ppppf"), GateThresholds())
    # two fixes and a break so far: the unseen groups could still carry it over the thresholds
    assert gate_still_possible(base, outcomes(LABELS[:5], "ffppf"), GateThresholds())
    assert not gate_still_possible(outcomes("pp", "pp"), [], GateThresholds())


def test_choose_edit_enforces_the_veto_and_accepts_at_most_one():
    labels = "ffpp"
    base = outcomes(labels, "fppp")
    vetoes = {"a": outcomes(labels, "fpfp"), "b": outcomes(labels, "ffpp"), "c": outcomes(labels, "ffpp")}
    asked = []

    def veto_of(name):
        asked.append(name)
        return eval_veto(base, vetoes[name], GateThresholds())

    chosen, decisions = choose_edit(["a", "b", "c"], veto_of)
    assert chosen == "b"
    assert [(name, decision) for name, decision, _ in decisions] == [
        ("a", "vetoed"),
        ("b", "accepted"),
        ("c", "not_chosen"),
    ]
    assert asked == ["a", "b"]  # no eval rollouts are spent after an edit was accepted
    assert choose_edit(["a"], veto_of)[0] is None


def test_test_comparison_resamples_groups_and_says_when_it_cannot_conclude():
    from qc_assets.stage_b.testeval import compare_on_test

    def outs(correct_flags, prefix="t"):
        return [
            GroupOutcome(f"{prefix}{i}", f"g{i // 2}", "fail", "fail" if ok else "pass", 1.0)
            for i, ok in enumerate(correct_flags)
        ]

    base = outs([True] * 40)
    worse = outs([i % 4 != 0 for i in range(40)])  # a quarter of the records broken
    report = compare_on_test(
        base, worse, baseline_version=0, kept_version=2, min_groups=20, samples=500, seed=1, level=0.95
    )
    assert report["n_groups"] == 20 and report["conclusive"] and report["verdict"] == "worse"
    assert report["difference"] == -0.25 and report["ci_high"] < 0 < 0.5 + report["ci_low"]
    same = compare_on_test(
        base, base, baseline_version=0, kept_version=0, min_groups=20, samples=500, seed=1, level=0.95
    )
    assert same["verdict"] == "no_difference" and same["ci_low"] == same["ci_high"] == 0
    small = compare_on_test(
        base[:10], worse[:10], baseline_version=0, kept_version=2, min_groups=20, samples=500, seed=1, level=0.95
    )
    assert small["verdict"] == "inconclusive" and "too small" in small["note"]
    assert not {"baseline_accuracy", "kept_accuracy", "difference"} & set(small)
