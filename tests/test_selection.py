"""Held-out selection: the prompt split, the weighting sweep and per-seed selection on selection prompts only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mva_core.rewards import seeded_rewards
from mva_core.selection import (
    SELECTION,
    TEST,
    select_held_out,
    selected_test_rewards,
    selection_weightings,
    split_prompts,
)


def prompts(n_per_origin=6):
    rows = [{"prompt_id": f"{origin}{i:02d}", "origin": origin} for origin in ("helpful", "harmless")
            for i in range(n_per_origin)]
    return pd.DataFrame(rows).sample(frac=1, random_state=3)  # file order must not matter


def test_split_is_balanced_per_origin_and_independent_of_order():
    split = split_prompts(prompts(), 0.5)
    assert split.groupby("origin")["part"].value_counts().unstack().to_dict() == {
        SELECTION: {"harmless": 3, "helpful": 3}, TEST: {"harmless": 3, "helpful": 3}}
    again = split_prompts(prompts().sort_values("prompt_id"), 0.5)
    assert split.set_index("prompt_id")["part"].sort_index().equals(again.set_index("prompt_id")["part"].sort_index())
    assert set(split.loc[split["part"] == SELECTION, "prompt_id"]) == {"helpful00", "helpful01", "helpful02",
                                                                      "harmless00", "harmless01", "harmless02"}


def test_split_rejects_a_side_without_prompts():
    with pytest.raises(ValueError, match="both need at least one"):
        split_prompts(pd.DataFrame({"prompt_id": ["a"]}), 0.5)
    with pytest.raises(ValueError, match="selection_fraction"):
        split_prompts(prompts(), 1.0)


def test_default_weighting_sweep_is_dense_and_keeps_win_rate_weightings():
    two = selection_weightings(["a", "b"], None, [[0.8, 0.2], [0.25, 0.75]])
    assert len(two) == 11 + 1  # 0.8/0.2 is on the 0.1 lattice, 0.25/0.75 is added
    assert two[-1] == {"a": 0.25, "b": 0.75} and all(abs(sum(w.values()) - 1) < 1e-12 for w in two[:11])
    assert len(selection_weightings(["a", "b", "c"], None)) == 15
    assert selection_weightings(["a", "b"], [[1, 0], [1, 0]]) == [{"a": 1.0, "b": 0.0}]
    with pytest.raises(ValueError, match="one per value"):
        selection_weightings(["a", "b"], [[1, 0, 0]])


def long_scores(rewards: dict, seeds=(1, 2), n_prompts=4):
    """rewards[(method, point)] = (a, b); point p1's value a rises by 2 per seed index; prompts are alike."""
    rows = []
    for s, seed in enumerate(seeds):
        for (method, point), (a, b) in rewards.items():
            for j in range(n_prompts):
                for value, r in (("a", a + 2 * s * (point == "p1")), ("b", b)):
                    rows.append({"method": method, "point_id": point, "prompt_id": f"q{j}", "value": value,
                                 "reward": r, "seed": seed})
    return pd.DataFrame(rows)


def points_of(rewards):
    return pd.DataFrame([{"method": m, "point_id": p, "kind": "grid", "lam_a": 0.0} for m, p in rewards])


def test_selection_uses_the_given_prompts_per_seed_with_ties_to_the_smallest_id():
    rewards = {("m", "p1"): (1.0, 0.0), ("m", "p2"): (0.0, 1.0), ("m", "p3"): (0.6, 0.6), ("n", "x2"): (0.5, 0.5),
               ("n", "x1"): (0.5, 0.5)}
    table = seeded_rewards(long_scores(rewards))
    weightings = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}, {"a": 0.5, "b": 0.5}]
    selections = select_held_out(table.prompt_subset(["q0", "q1"]), points_of(rewards), weightings)
    chosen = selections.set_index(["seed", "weighting", "method"])["point_id"]
    assert chosen[("1", "a=1,b=0", "m")] == "p1" and chosen[("1", "a=0,b=1", "m")] == "p2"
    assert chosen[("1", "a=0.5,b=0.5", "m")] == "p3"
    assert chosen[("2", "a=0.5,b=0.5", "m")] == "p1"  # in seed 2, p1 is (3, 0): 1.5 beats p3's 0.6
    assert set(chosen.xs("n", level="method")) == {"x1"}
    selected = selected_test_rewards(table.prompt_subset(["q2", "q3"]), selections, weightings)
    assert selected["m"].shape == (2, 3, 2, 2)  # seeds, weightings, values, test prompts
    assert selected["m"][1, 2, 0, 0] == 3.0  # seed 2, balanced weighting -> p1, value a


def test_seeds_must_score_the_same_points():
    scores = long_scores({("m", "p1"): (1.0, 0.0)})
    scores = scores[~((scores["seed"] == 2) & (scores["prompt_id"] == "q3"))]
    with pytest.raises(ValueError, match="training seed 2"):
        seeded_rewards(scores)


def test_no_seed_column_is_one_seed():
    scores = long_scores({("m", "p1"): (1.0, 0.0)}, seeds=(1,)).drop(columns="seed")
    assert seeded_rewards(scores).rewards.shape == (1, 1, 2, 4)
    assert np.all(seeded_rewards(scores).rewards[0, 0, 0] == 1.0)
