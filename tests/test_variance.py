"""Crossed seeds × prompts variance components: estimates, and intervals that cover with few seeds."""
from __future__ import annotations

import numpy as np
import pytest

from mva_core.variance import Components, components, mean_interval, minimum_detectable_effect


def simulate(rng, n_seeds, n_prompts, seed_share, n_runs):
    """y = a_seed + b_prompt + e with total variance 1, ``seed_share`` of it from the seed, the rest split evenly."""
    rest = 1 - seed_share
    a = rng.normal(0, np.sqrt(seed_share), (n_runs, n_seeds, 1))
    b = rng.normal(0, np.sqrt(rest / 2), (n_runs, 1, n_prompts))
    e = rng.normal(0, np.sqrt(rest / 2), (n_runs, n_seeds, n_prompts))
    return a + b + e


def test_components_recover_known_variances_on_average():
    rng = np.random.default_rng(0)
    runs = simulate(rng, 5, 40, 0.5, 2000)
    parts = [components(y) for y in runs]
    assert np.mean([p.seed for p in parts]) == pytest.approx(0.5, rel=0.1)
    assert np.mean([p.prompt for p in parts]) == pytest.approx(0.25, rel=0.1)
    assert np.mean([p.residual for p in parts]) == pytest.approx(0.25, rel=0.05)


@pytest.mark.parametrize("n_seeds, seed_share", [(3, 0.0), (3, 0.5), (3, 0.9), (5, 0.9), (3, 1.0)])
def test_t_interval_covers_with_few_seeds(n_seeds, seed_share):
    rng = np.random.default_rng(n_seeds * 100 + int(seed_share * 10))
    runs = simulate(rng, n_seeds, 20, seed_share, 2000)
    covered = [low <= 0 <= high for _, low, high, _, _ in (mean_interval(y, 0.95) for y in runs)]
    assert 0.93 <= np.mean(covered) <= 0.99


def test_one_seed_covers_prompt_sampling_with_prompt_degrees_of_freedom():
    y = np.random.default_rng(3).normal(size=(1, 20))
    mean, low, high, se, df = mean_interval(y, 0.95)
    assert df == 19 and se == pytest.approx(y.std(ddof=1) / np.sqrt(20)) and low < mean < high


def test_minimum_detectable_effect_has_about_80_percent_power():
    """A true effect of the mde computed from the true components is detected about 80% of the time."""
    truth = Components(seed=0.5, prompt=0.25, residual=0.25)
    mde = minimum_detectable_effect(np.sqrt(truth.variance_of_mean(3, 20)), truth.degrees_of_freedom(3, 20))
    runs = simulate(np.random.default_rng(4), 3, 20, 0.5, 2000)
    detected = [low > 0 for _, low, _, _, _ in (mean_interval(y + mde, 0.95) for y in runs)]
    assert 0.72 <= np.mean(detected) <= 0.88
