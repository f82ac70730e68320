"""The verdict rule: held / not held / not decided at the boundaries, NaN, ties, intervals."""

import math

import numpy as np
import pytest

from subnets.claims import (
    HELD,
    NOT_DECIDED,
    NOT_HELD,
    Claim,
    Estimate,
    Rule,
    bootstrap,
    paired_bootstrap,
    seed_interval,
    verdict,
)


def test_point_estimates_against_a_threshold_with_margin():
    rule = Rule(">", 0.5, margin=0.1)  # held above 0.6
    assert verdict(0.61, rule).outcome == HELD
    assert verdict(0.6, rule).outcome == NOT_HELD  # a tie is not "more than"
    assert verdict(0.55, rule).outcome == NOT_HELD
    assert verdict(0.39, Rule("<", 0.5, 0.1)).outcome == HELD
    assert verdict(0.4, Rule("<", 0.5, 0.1)).outcome == NOT_HELD


def test_an_interval_that_straddles_the_cut_is_not_decided():
    rule = Rule(">", 0.0)
    assert verdict(Estimate(0.02, -0.01, 0.05), rule).outcome == NOT_DECIDED
    assert verdict(Estimate(0.02, 0.001, 0.05), rule).outcome == HELD
    assert verdict(Estimate(-0.02, -0.05, -0.001), rule).outcome == NOT_HELD
    assert verdict(Estimate(0.0, 0.0, 0.0), rule).outcome == NOT_HELD  # tie


def test_within_rule():
    rule = Rule("within", 1.0, margin=0.01)
    assert verdict(Estimate(1.0, 0.995, 1.005), rule).outcome == HELD
    assert verdict(Estimate(1.0, 0.98, 1.005), rule).outcome == NOT_DECIDED
    assert verdict(Estimate(0.9, 0.85, 0.95), rule).outcome == NOT_HELD


def test_nan_is_never_a_verdict():
    assert verdict(float("nan"), Rule(">", 0)).outcome == NOT_DECIDED
    assert verdict(Estimate(0.5, float("nan"), 1.0), Rule(">", 0)).outcome == NOT_DECIDED


def test_paired_bootstrap_matches_hand_computed_difference_and_pairs_nans():
    a = np.array([1.0, 1.0, 0.0, 1.0, np.nan])
    b = np.array([0.0, 1.0, 0.0, 0.0, 1.0])
    est = paired_bootstrap(a, b, n_resamples=500, seed=1)
    assert est.value == pytest.approx(0.5)  # row 4 dropped from both: 3/4 - 1/4
    assert est.low <= est.value <= est.high
    assert "4 images" in est.method
    again = paired_bootstrap(a, b, n_resamples=500, seed=1)
    assert (again.low, again.high) == (est.low, est.high)


def test_paired_interval_is_narrower_than_unpaired_for_correlated_rows():
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    a, b = base + 0.05, base + rng.normal(scale=0.01, size=400)
    paired = paired_bootstrap(a, b)
    assert paired.low > 0  # the shift of 0.05 is clear once rows are paired
    unpaired = paired_bootstrap(a, rng.permutation(b))
    assert unpaired.high - unpaired.low > 10 * (paired.high - paired.low)


def test_bootstrap_of_a_constant_has_a_zero_width_interval():
    est = bootstrap([0.25] * 10)
    assert (est.value, est.low, est.high) == (0.25, 0.25, 0.25)


def test_a_statistic_undefined_on_every_resample_is_not_decided_without_warnings():
    import warnings

    def gap(a, b):  # the mean of the rows whose b is 0: there are none
        return a[b == 0].mean() if (b == 0).any() else float("nan")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], gap, n_resamples=20)
    assert est.is_nan and verdict(est, Rule(">", 0.0)).outcome == NOT_DECIDED


def test_seed_interval_is_the_t_interval():
    est = seed_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert est.value == 2.0
    assert est.low == pytest.approx(2.0 - half) and est.high == pytest.approx(2.0 + half)
    assert not seed_interval([1.0]).has_interval


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="op"):
        Rule(">=", 0.5)
    with pytest.raises(ValueError, match="margin"):
        Rule(">", 0.5, -0.1)


def test_a_trained_row_is_held_only_when_it_beats_its_placebo_over_seeds():
    rule = Rule(">", 0.5)
    held = Claim.trained("c", "p", [0.8, 0.82, 0.81], [0.1, 0.12, 0.11], rule)
    assert held.decide().outcome == HELD
    assert held.gain.seeds == 3 and held.gain.value == pytest.approx(0.7)
    # passes its rule, but the untrained networks do just as well: not held
    as_placebo = Claim.trained("c", "p", [0.8, 0.82, 0.81], [0.85, 0.86, 0.84], rule)
    assert as_placebo.decide().outcome == NOT_HELD
    assert "placebo" in as_placebo.decide().reason
    # the trained networks miss the rule: not held, whatever the placebo does
    assert Claim.trained("c", "p", [0.3, 0.32, 0.31], [0.1, 0.1, 0.1],
                         rule).decide().outcome == NOT_HELD
    # a difference that straddles the margin: not decided
    noisy = Claim.trained("c", "p", [0.8, 0.9, 0.7], [0.7, 0.95, 0.6], Rule(">", 0.5, 0.0))
    assert noisy.decide().outcome == NOT_DECIDED


def test_one_training_seed_decides_nothing_about_training():
    one = Claim.trained("c", "p", [0.9], [0.1], Rule(">", 0.5))
    assert one.decide().outcome == NOT_DECIDED
    assert "one training seed" in one.decide().reason


def test_a_placebo_run_cannot_hold_a_trained_row():
    # In a placebo run the "trained" networks are the placebo ones: identical values.
    values = [0.8, 0.83, 0.79]
    for rule in (Rule(">", 0.5), Rule("<", 0.9), Rule("within", 0.8, 0.1)):
        assert Claim.trained("c", "p", values, values, rule).decide().outcome == NOT_HELD


def test_a_within_row_needs_its_placebo_outside_the_band():
    rule = Rule("within", 0.0, 0.01)
    assert Claim.trained("c", "p", [0.001, -0.002, 0.0], [0.2, 0.25, 0.22],
                         rule).decide().outcome == HELD
    assert Claim.trained("c", "p", [0.001, -0.002, 0.0], [0.001, 0.0, -0.001],
                         rule).decide().outcome == NOT_HELD


def test_a_nan_placebo_leaves_a_trained_row_undecided():
    row = Claim.trained("c", "p", [0.8, 0.82, 0.81], [0.1, float("nan"), 0.1], Rule(">", 0.5))
    assert row.decide().outcome == NOT_DECIDED
    # ... unless the trained networks already fail the rule
    assert Claim.trained("c", "p", [0.3, 0.32, 0.31], [0.1, float("nan"), 0.1],
                         Rule(">", 0.5)).decide().outcome == NOT_HELD


def test_an_undefined_trained_statistic_says_so_whatever_the_seeds():
    row = Claim.trained("c", "p", [0.5, float("nan"), 0.4], [0.1, 0.1, 0.1], Rule(">", 0.0))
    assert row.decide().outcome == NOT_DECIDED
    assert "undefined" in row.decide().reason

