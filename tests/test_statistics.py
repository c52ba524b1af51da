"""Paired cluster bootstrap, paired differences, intervals, verdicts and evaluator checks (mva_core.statistics)."""
from __future__ import annotations

import numpy as np
import pytest

from mva_core.statistics import (
    AT_CHANCE,
    BETTER_THAN_CHANCE,
    Estimate,
    accuracy_check,
    cluster_resamples,
    judge,
    percentile_interval,
    t_interval,
    verdict,
    win_credit,
)


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


def test_verdicts_and_expanded_interval():
    assert [verdict(0.1, 1), verdict(-1, -0.1), verdict(-1, 1), verdict(0, 1)] == [
        "supported", "contradicted", "inconclusive", "inconclusive"]
    boot = np.random.default_rng(0).normal(size=20000)
    plain, expanded = percentile_interval(boot, 0.95), percentile_interval(boot, 0.95, n_clusters=12)
    assert plain[1] == pytest.approx(1.96, abs=0.05)
    assert expanded[1] == pytest.approx(np.sqrt(12 / 11) * 2.201, abs=0.06)  # sqrt(n/(n-1)) * t_{11, 0.975}


def test_accuracy_check_against_chance():
    chance = accuracy_check(34, 64)  # the embedded default's helpful reward model before this check existed
    assert chance["check"] == AT_CHANCE and chance["ci_low"] == pytest.approx(0.40, abs=0.01)
    assert chance["ci_high"] == pytest.approx(0.66, abs=0.01)
    assert accuracy_check(50, 64)["check"] == BETTER_THAN_CHANCE


def test_verdict_against_a_null_in_either_claimed_direction():
    assert [verdict(0.51, 0.9, null=0.5), verdict(0.1, 0.49, null=0.5), verdict(0.4, 0.6, null=0.5)] == [
        "supported", "contradicted", "inconclusive"]
    assert [verdict(-1, -0.1, direction=-1), verdict(0.1, 1, direction=-1), verdict(-1, 1, direction=-1)] == [
        "supported", "contradicted", "inconclusive"]
    with pytest.raises(ValueError, match="direction"):
        verdict(0, 1, direction=0)


def test_judge_reports_the_estimate_its_interval_and_the_verdict():
    boot = np.random.default_rng(0).normal(loc=1.0, scale=0.1, size=5000)
    row = judge(1.0, boot, 0.95, n_clusters=30)
    low, high = percentile_interval(boot, 0.95, 30)
    assert row == {"estimate": 1.0, "ci_low": float(low), "ci_high": float(high), "verdict": "supported"}
    assert judge(1.0, boot, 0.95, 30, direction=-1)["verdict"] == "contradicted"
    assert judge(1.0, boot, 0.95, 30, null=1.0)["verdict"] == "inconclusive"


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
