"""The planted control's c from a pilot: the replicate at (1 - c, 1) against soup at (1, 1)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mva_core.planted_strength import effect_by_strength, strength_for
from mva_core.rewards import seeded_rewards


def pilot_scores(slope: float, n_seeds: int = 3, n_prompts: int = 30) -> pd.DataFrame:
    """concise reward = slope · λ_concise + noise at every point of soup and the replicate (positive at 1); soup
    trained 2 words longer (the replicate − soup null's training noise)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(n_seeds):
        for method, lams in (("soup", [1.0]), ("replicate", [1.0, 0.5, 0.0, -0.5])):
            for lam in lams:
                pid = f"{lam:g}_1"
                rows += [{"point_id": pid, "prompt_id": f"p{j}", "method": method, "value": "concise",
                          "reward": slope * lam + rng.normal(0, 0.5) - 2.0 * (method == "soup"), "seed": seed}
                         for j in range(n_prompts)]
    return pd.DataFrame(rows)


def test_the_effect_of_c_is_the_lost_efficacy_and_the_target_c_is_interpolated():
    table = effect_by_strength(seeded_rewards(pilot_scores(slope=6.0)), ["concise", "positive"], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(table["effect"], [0.0, -3.0, -6.0, -9.0], atol=0.25)
    planted = table[table["c"] > 0]  # c = 0 is the replicate against itself: exactly 0
    assert (planted["ci_low"] < planted["effect"]).all() and (planted["effect"] < planted["ci_high"]).all()
    assert set(table["n_seeds"]) == {3} and set(table["n_prompts"]) == {30}
    np.testing.assert_allclose(table["baseline_offset"], 2.0, atol=0.25)  # left out of the effect
    assert strength_for(table, -6.0) == pytest.approx(1.0, abs=0.05)
    assert strength_for(table, -7.5) == pytest.approx(1.25, abs=0.05)


def test_a_target_beyond_the_measured_strengths_asks_for_more_grid_points():
    table = effect_by_strength(seeded_rewards(pilot_scores(slope=2.0)), ["concise", "positive"], [0.0, 0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match=r"add points \(1 - c, 1\)"):
        strength_for(table, -6.0)
    with pytest.raises(ValueError, match="no scores at point 2_1"):
        effect_by_strength(seeded_rewards(pilot_scores(slope=2.0)), ["concise", "positive"], [-1.0])
