"""Paired cluster bootstrap, paired differences, intervals with resolution, equivalence, Holm families and evaluator
checks (mva_core.statistics). Calibration of the verdicts on simulated data: tests/test_calibration.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mva_core.frontier import hypervolumes
from mva_core.statistics import (
    AT_CHANCE,
    BETTER_THAN_CHANCE,
    WORSE_THAN_CHANCE,
    Estimate,
    accuracy_check,
    cluster_resamples,
    holm,
    judge,
    linearised,
    primary_mask,
    t_interval,
    verdict,
    win_credit,
    win_rate_seed_floor,
    with_holm,
)
from mva_core.variance import mean_interval


def test_resamples_draw_prompts_and_seeds():
    one = cluster_resamples(n_prompts=5, n_seeds=1, n_boot=100, seed=0)
    assert (one.prompt_counts.sum(axis=1) == 5).all() and (one.seed_counts == 1).all() and not one.resamples_seeds
    two = cluster_resamples(n_prompts=5, n_seeds=3, n_boot=100, seed=0)
    assert (two.seed_counts.sum(axis=1) == 3).all() and two.seed_counts.std() > 0 and two.resamples_seeds
    x = np.random.default_rng(1).normal(size=(3, 2, 5))  # seeds, inner, prompts
    expected = np.einsum("bs,sip,bp->bi", two.seed_counts, x, two.prompt_counts) / 15
    assert two.means(x) == pytest.approx(expected)
    with pytest.raises(ValueError, match="seeds x"):
        two.means(x[:2])


def test_verdicts():
    assert [verdict(0.1, 1), verdict(-1, -0.1), verdict(-1, 1), verdict(0, 1)] == [
        "supported", "contradicted", "inconclusive", "inconclusive"]


def test_accuracy_check_against_chance():
    chance = accuracy_check(34, 64)  # the embedded default's helpful reward model before this check existed
    assert chance["check"] == AT_CHANCE and chance["ci_low"] == pytest.approx(0.40, abs=0.01)
    assert chance["ci_high"] == pytest.approx(0.66, abs=0.01)
    assert accuracy_check(50, 64)["check"] == BETTER_THAN_CHANCE


def test_an_inverted_evaluator_reads_worse_than_chance():
    """0 of 8 held-out pairs right (exact CI [0, 0.369]): the evaluator ranks answers backwards (issue 23)."""
    inverted = accuracy_check(0, 8)
    assert inverted["ci_high"] == pytest.approx(0.369, abs=0.001)
    assert inverted["check"] == WORSE_THAN_CHANCE == "worse than chance (inverted)"
    assert accuracy_check(3, 8)["check"] == AT_CHANCE


def test_verdict_against_a_null_in_either_claimed_direction():
    assert [verdict(0.51, 0.9, null=0.5), verdict(0.1, 0.49, null=0.5), verdict(0.4, 0.6, null=0.5)] == [
        "supported", "contradicted", "inconclusive"]
    assert [verdict(-1, -0.1, direction=-1), verdict(0.1, 1, direction=-1), verdict(-1, 1, direction=-1)] == [
        "supported", "contradicted", "inconclusive"]
    with pytest.raises(ValueError, match="direction"):
        verdict(0, 1, direction=0)


def mean_estimate(y: np.ndarray) -> Estimate:
    return Estimate(np.asarray(y.mean()), samples=y)


def test_judge_gives_the_crossed_t_interval_with_its_resolution():
    y = np.random.default_rng(0).normal(loc=1.0, size=(3, 20)) + np.array([[0.5], [0.0], [-0.3]])
    row = judge(mean_estimate(y), 0.95)
    mean, low, high, se, df = mean_interval(y, 0.95)
    assert (row["estimate"], row["ci_low"], row["ci_high"], row["se"], row["df"]) == pytest.approx((mean, low, high, se, df))
    q = stats.t.ppf(0.975, df)
    assert (row["ci_high"] - row["ci_low"]) / (2 * q) == pytest.approx(row["se"])  # the SE
    assert row["mde"] == pytest.approx((q + stats.t.ppf(0.8, df)) * row["se"])
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(mean / se, df))
    assert row["verdict"] == "supported" and np.isnan(row["p_equivalence"]) and np.isnan(row["equivalence_margin"])
    assert judge(mean_estimate(y), 0.95, direction=-1)["verdict"] == "contradicted"
    assert judge(mean_estimate(y), 0.95, null=mean)["verdict"] == "inconclusive"
    one_seed = judge(mean_estimate(y[:1]), 0.95)
    assert one_seed["df"] == 19 and one_seed["se"] == pytest.approx(y[0].std(ddof=1) / np.sqrt(20))


@pytest.mark.parametrize("shift", [0.0, 0.3, 0.6, 1.2])
def test_the_p_value_and_the_interval_agree(shift):
    y = np.random.default_rng(1).normal(size=(2, 15)) + shift
    row = judge(mean_estimate(y), 0.95)
    assert (row["p_value"] < 0.05) == (row["verdict"] != "inconclusive")


def test_equivalence_needs_a_margin_and_comes_after_a_supported_difference():
    y = np.random.default_rng(2).normal(scale=0.1, size=(1, 30))
    y -= y.mean()  # estimate exactly 0, se about 0.018
    assert judge(mean_estimate(y), 0.95)["verdict"] == "inconclusive"  # no margin: never equivalent
    row = judge(mean_estimate(y), 0.95, margin=0.1)
    assert row["verdict"] == "equivalent" and row["p_equivalence"] < 0.05 and row["equivalence_margin"] == 0.1
    q90 = stats.t.ppf(0.95, 29)  # the 90% interval: two one-sided tests at 0.05
    at_edge = judge(mean_estimate(y), 0.95, margin=q90 * row["se"] * 1.01)
    assert at_edge["verdict"] == "equivalent" and at_edge["p_equivalence"] == pytest.approx(0.05, abs=0.002)
    assert judge(mean_estimate(y), 0.95, margin=q90 * row["se"] * 0.99)["verdict"] == "inconclusive"
    shifted = judge(mean_estimate(y + 0.05), 0.95, margin=0.1)  # excludes 0, inside the margin
    assert shifted["verdict"] == "supported"


def test_rows_without_a_spread():
    ties = judge(mean_estimate(np.zeros((2, 6))), 0.95, margin=0.1)
    assert (ties["ci_low"], ties["ci_high"], ties["p_value"], ties["verdict"]) == (0, 0, 1, "equivalent")
    single = judge(mean_estimate(np.ones((1, 1))), 0.95)
    assert np.isnan(single["ci_low"]) and np.isnan(single["p_value"]) and single["verdict"] == "inconclusive"


def test_holm_adjustment_within_families():
    assert holm([0.01, 0.04, 0.03, np.nan]).tolist() == pytest.approx([0.04, 0.09, 0.09, 1.0])
    table = pd.DataFrame({"family": ["a", "a", "a", "b"], "p_value": [0.001, 0.03, 0.04, 0.03],
                          "p_equivalence": [np.nan, 0.01, 0.5, np.nan],
                          "verdict": ["supported", "contradicted", "supported", "supported"]})
    assert with_holm(table, 0.95)["verdict_holm"].tolist() == ["supported", "equivalent", "inconclusive", "supported"]


def test_a_mean_is_its_own_linear_part_and_a_hypervolume_is_judged_through_it():
    resamples = cluster_resamples(n_prompts=20, n_seeds=3, n_boot=400, seed=0)
    x = np.random.default_rng(3).normal(size=(3, 2, 20)) + np.array([[1.0], [2.0]])  # seeds, values, prompts
    rewards = resamples.estimate(x)
    mean = linearised(rewards.at(0), [rewards], 0.95)
    np.testing.assert_allclose(mean.samples - mean.samples.mean(), x[:, 0] - x[:, 0].mean(), atol=1e-9)
    reference = np.zeros(2)
    box = Estimate(hypervolumes(rewards.value[None, None], reference)[0], hypervolumes(rewards.boot[:, None], reference))
    judged = judge(linearised(box, [rewards], 0.95), 0.95)
    # the area of one box is about R_1·R_2: its linear part is 2·x_1 + 1·x_2 per (seed, prompt)
    delta = judge(mean_estimate(2 * x[:, 0] + x[:, 1]), 0.95)
    assert judged["estimate"] == pytest.approx(float(rewards.value.prod()))
    assert judged["se"] == pytest.approx(delta["se"], rel=0.15) and judged["df"] == pytest.approx(delta["df"], rel=0.15)


def test_a_skewed_statistic_keeps_its_percentile_shape_with_one_seed():
    resamples = cluster_resamples(n_prompts=12, n_seeds=1, n_boot=4000, seed=0)
    rewards = resamples.estimate(np.random.default_rng(5).normal(size=(1, 1, 12)))
    skewed = Estimate(np.exp(2 * rewards.value[0]), np.exp(2 * rewards.boot[:, 0]))  # right-skewed resamples
    judged = linearised(skewed, [rewards], 0.95)
    assert judged.skew[1] > 1.2 * judged.skew[0]
    row = judge(judged, 0.95)
    low, high = np.quantile(skewed.boot, [0.025, 0.975])
    assert (row["ci_high"] - row["estimate"]) / (row["estimate"] - row["ci_low"]) == pytest.approx(
        (high - skewed.value) / (skewed.value - low))
    for edge in (row["ci_low"], row["ci_high"]):  # each side's test uses its own standard error
        assert judge(judged, 0.95, null=edge)["p_value"] == pytest.approx(0.05)
    three_seeds = cluster_resamples(n_prompts=12, n_seeds=3, n_boot=400, seed=0)
    rewards = three_seeds.estimate(np.random.default_rng(5).normal(size=(3, 1, 12)))
    skewed = Estimate(np.exp(2 * rewards.value[0]), np.exp(2 * rewards.boot[:, 0]))
    assert linearised(skewed, [rewards], 0.95).skew == (1.0, 1.0)  # resampled seeds: symmetric


def test_win_rate_seed_floor_is_the_spread_of_seed_win_rates_under_the_null():
    """Sheppard: seed win rates Φ(a_s/τ) vary with variance arcsin(ρ)/(2π), ρ the seed share of the differences."""
    rng = np.random.default_rng(4)
    seed_effects = rng.normal(scale=np.sqrt(0.9), size=(200, 1))
    differences = seed_effects + rng.normal(scale=np.sqrt(0.1), size=(200, 400))
    seed_rates = (differences > 0).mean(axis=1)
    assert win_rate_seed_floor(differences) == pytest.approx(np.arcsin(0.9) / (2 * np.pi), rel=0.15)
    assert win_rate_seed_floor(differences) == pytest.approx(seed_rates.var(ddof=1), rel=0.2)
    assert win_rate_seed_floor(differences[:1]) == 0.0


def test_primary_rows_are_matched_on_the_columns_a_selector_names():
    table = pd.DataFrame({"metric": ["hypervolume", "mean_reward", "mean_reward"], "weighting": ["", "all", "a=1"],
                          "lambda": [1.0, 1.0, 0.5]})
    selectors = [{"table": "comparisons", "metric": "hypervolume"},
                 {"table": "comparisons", "metric": "mean_reward", "weighting": "all"},
                 {"table": "efficacy", "lambda": 0.5}]
    assert primary_mask(table, "comparisons", selectors).tolist() == [True, True, False]
    assert primary_mask(table, "efficacy", selectors).tolist() == [False, False, True]
    assert primary_mask(table, "interference", selectors).tolist() == [False, False, False]


def test_paired_difference_is_taken_inside_each_resample():
    resamples = cluster_resamples(n_prompts=6, n_seeds=2, n_boot=50, seed=1)
    rng = np.random.default_rng(2)
    prompt_effect = rng.normal(scale=5.0, size=6)
    a, b = prompt_effect + 1.0 + rng.normal(scale=0.01, size=(2, 6)), prompt_effect + rng.normal(scale=0.01, size=(2, 6))
    diff = resamples.estimate(a[:, None, :]) - resamples.estimate(b[:, None, :])
    assert isinstance(diff, Estimate) and diff.boot.shape == (50, 1)
    np.testing.assert_allclose(diff.value, (a - b).mean(), rtol=1e-12)
    assert np.ptp(diff.boot) < 0.05 < np.ptp(resamples.estimate(a[:, None, :]).boot)  # prompt effects cancel


def test_t_interval_across_seeds():
    mean, low, high = t_interval([1.0, 2.0, 3.0], 0.95)
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / np.sqrt(3), abs=1e-3) and mean - low == pytest.approx(high - mean)
    mean, low, high = t_interval([5.0], 0.95)
    assert mean == 5.0 and np.isnan(low) and np.isnan(high)


def test_win_credit_with_tie_tolerance():
    a, b = np.array([3.0, 1.0, 0.0, 1.05]), np.array([2.0, 1.0, 1.0, 1.0])
    assert win_credit(a, b, 0.0).tolist() == [1.0, 0.5, 0.0, 1.0]
    assert win_credit(a, b, 0.1).tolist() == [1.0, 0.5, 0.0, 0.5]
    with pytest.raises(ValueError, match="tie_tol"):
        win_credit(a, b, -1.0)
