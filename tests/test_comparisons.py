"""The comparisons and win-rate tables, with calibration against simulated evaluations whose true rewards are known
(tests/stat_sims.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stat_sims import frontier_means, run_comparison, simulate, true_differences

from mva_core.comparisons import ALL_WEIGHTINGS, COMPARISON_COLUMNS, Comparator
from mva_core.statistics import cluster_resamples


def hand_comparator(tie_tol=0.0):
    """Target 'a' vs 'b', one seed, one weighting (value x only), 4 test prompts.

    Value x: a = [3, 1, 0, 4], b = [2, 1, 1, 2] (differences +1, 0, -1, +2); value y: all 0.5 (ties)."""
    a = np.array([[[[3.0, 1, 0, 4], [0.5] * 4]]])
    b = np.array([[[[2.0, 1, 1, 2], [0.5] * 4]]])
    resamples = cluster_resamples(4, 1, 300, seed=0)
    return Comparator({"a": a, "b": b}, [{"x": 1.0, "y": 0.0}], ["x", "y"], [0.0, 0.0], resamples, tie_tol=tie_tol)


def test_comparisons_table_exact_estimates():
    table = hand_comparator().comparisons("a")
    assert list(table.columns) == COMPARISON_COLUMNS
    row = table.set_index(["metric", "value", "weighting"])
    assert row.loc[("mean_reward", "x", "x=1,y=0"), "estimate"] == pytest.approx(0.5)
    assert row.loc[("win_rate", "x", "x=1,y=0"), "estimate"] == pytest.approx(0.625 - 0.5)  # 2 wins, 1 tie, 1 loss
    assert row.loc[("win_rate", "y", ALL_WEIGHTINGS), ["estimate", "ci_low", "ci_high"]].tolist() == [0, 0, 0]
    assert row.loc[("win_rate", "y", ALL_WEIGHTINGS), "verdict"] == "inconclusive"
    assert row.loc[("weighted_reward", "", "x=1,y=0"), "estimate"] == pytest.approx(0.5)
    assert row.loc[("hypervolume", "", ""), "estimate"] == pytest.approx(2.0 * 0.5 - 1.5 * 0.5)
    assert (table["n_prompts"] == 4).all() and (table["n_seeds"] == 1).all()


def test_win_rate_table_counts_and_tie_tolerance():
    wins = hand_comparator().win_rate_table("a", ["x=1,y=0"]).set_index("value")
    assert tuple(wins.loc["x", ["wins", "ties", "losses", "n"]]) == (2, 1, 1, 4)
    assert wins.loc["x", "win_rate"] == pytest.approx(0.625)
    tolerant = hand_comparator(tie_tol=1.0).win_rate_table("a", ["x=1,y=0"]).set_index("value")
    assert tuple(tolerant.loc["x", ["wins", "ties", "losses"]]) == (1, 3, 0)
    with pytest.raises(ValueError, match="'zzz'"):
        hand_comparator().comparisons("zzz")


def test_identical_methods_are_inconclusive_everywhere():
    x = np.random.default_rng(0).normal(size=(2, 3, 2, 10))
    comparator = Comparator({"a": x, "b": x.copy()}, [{"u": w, "v": 1 - w} for w in (0, 0.5, 1)], ["u", "v"],
                            [-3.0, -3.0], cluster_resamples(10, 2, 200, 0))
    table = comparator.comparisons("a")
    assert (table["verdict"] == "inconclusive").all() and (table["estimate"] == 0).all()
    assert (table["verdict_holm"] == "inconclusive").all() and (table["p_value"] == 1).all()


def simulated_verdicts(true_means, reps: int, n_prompts: int = 24, n_boot: int = 400, seed: int = 0) -> pd.DataFrame:
    """Comparisons of A (target) against B over ``reps`` simulated evaluations, with each row's true value."""
    rng = np.random.default_rng(seed)
    frames = []
    for rep in range(reps):
        tensor, points, truth = simulate(rng, true_means, n_prompts)
        table, selections, weightings, reference = run_comparison(tensor, points, n_boot, rep)
        truths = true_differences(truth, tensor, selections, weightings, reference, noise=1.0)
        frames.append(table.merge(truths, on=["method_b", "metric", "value", "weighting"]).assign(rep=rep))
    return pd.concat(frames, ignore_index=True)


def test_null_with_16_against_4_candidates_is_rarely_supported_or_contradicted():
    """No true difference anywhere: a 16-point method against a 4-point one (the old statistics favoured the
    larger grid: win rate 0.533 on average, hypervolume 'better' 72% of the time)."""
    table = simulated_verdicts({"A": np.zeros((16, 2)), "B": np.zeros((4, 2))}, reps=200)
    rates = table.groupby("metric")["verdict"].value_counts(normalize=True).unstack(fill_value=0.0)
    assert (rates["supported"] <= 0.05).all() and (rates.get("contradicted", 0.0) <= 0.05).all(), rates
    headline = table[table["weighting"].isin(["", ALL_WEIGHTINGS])]
    per_row = headline.groupby(["metric", "value"])["verdict"].value_counts(normalize=True).unstack(fill_value=0.0)
    assert (per_row["supported"] <= 0.05).all(), per_row


def test_intervals_cover_a_known_difference_at_the_default_scale():
    """24 prompts (12 test), one training seed, as the embedded default; A's frontier is B's shifted by 0.3."""
    a = frontier_means(16, 1.0) + 0.3
    a[0] = 0.0  # both methods share the SFT model
    table = simulated_verdicts({"A": a, "B": frontier_means(4, 1.0)}, reps=200, seed=1)
    table["covered"] = (table["ci_low"] <= table["truth"]) & (table["truth"] <= table["ci_high"])
    coverage = table.groupby("metric")["covered"].mean()
    assert ((coverage >= 0.90) & (coverage <= 0.99)).all(), coverage
    assert (table.query("metric == 'hypervolume'")["verdict"] == "supported").mean() > 0.2  # it has power too
