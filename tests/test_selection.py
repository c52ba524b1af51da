"""Held-out selection: the prompt split, the weighting sweep and per-seed selection on selection prompts only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mva_core.reporting import build_tables
from mva_core.rewards import seeded_rewards
from mva_core.selection import (
    SELECTION,
    TEST,
    hull_vertices,
    select_held_out,
    selected_test_rewards,
    selection_weightings,
    split_prompts,
    value_scales,
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


def test_scales_come_from_the_sft_spread_with_floors():
    rng = np.random.default_rng(0)
    keys = {("m", "sft"): "sft", ("m", "p1"): "grid"}
    rows = [{"method": m, "point_id": p, "prompt_id": f"q{j}", "value": value, "seed": seed,
             "reward": (5.0 if value == "flat" else 0.0) if p == "sft" else float(rng.normal(scale=3.0)) * (value != "const")}
            for seed in (1, 2) for m, p in keys for value in ("flat", "const", "spread") for j in range(8)]
    sft_spread = [r for r in rows if r["point_id"] == "sft" and r["value"] == "spread"]
    for j, row in enumerate(sft_spread):
        row["reward"] = float(j % 2)  # 0, 1, 0, 1, ... in each seed
    table = seeded_rewards(pd.DataFrame(rows))
    points = pd.DataFrame([{"method": m, "point_id": p, "kind": k} for (m, p), k in keys.items()])
    scales = value_scales(table, points)
    assert scales.values == ("const", "flat", "spread")
    assert scales.basis == ("unit", "all points", "sft")  # every reward equal; SFT constant; SFT varies
    assert scales.scales[0] == 1.0 and scales.scales[2] == pytest.approx(np.std([0, 1] * 4, ddof=1))
    grid = np.array([r["reward"] for r in rows if r["point_id"] == "p1" and r["value"] == "flat"]).reshape(2, 8)
    assert scales.scales[1] == pytest.approx(np.sqrt(grid.var(axis=1, ddof=1).mean() / 2))  # SFT adds variance 0
    assert scales.columns()["scale_basis"] == "const=unit,flat=all points,spread=sft"


def test_hull_vertices_of_a_concave_curve_and_its_dominated_points():
    angles = np.linspace(0, np.pi / 2, 7)
    curve = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    means = np.vstack([curve, [[0.0, 0.0], [0.5, 0.5], curve[3]]])  # origin, an inner point, a duplicate
    assert hull_vertices(means).tolist() == [True] * 7 + [False, False, True]
    assert hull_vertices(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])).tolist() == [True, False, True]  # on a chord


UNITS = {"concise": 100.0, "positive": 0.01}  # words and shares: 10,000 times apart


def concave_run(units: dict[str, float], seeds=(1, 2), n_prompts: int = 40):
    """16 points of one method: SFT at 0 and 15 on a quarter circle (a smooth concave frontier), each value in its own
    units; every point shares the prompt's and seed's noise, so the selection means keep the curve's shape."""
    rng = np.random.default_rng(0)
    angles = np.linspace(0, np.pi / 2, 15)
    centres = np.vstack([[0.0, 0.0], np.stack([np.cos(angles), np.sin(angles)], axis=1)])
    noise = rng.normal(size=(len(seeds), 2, n_prompts))
    rows = [{"method": "mva", "point_id": f"p{i:02d}", "prompt_id": f"q{j:03d}", "value": value, "seed": seed,
             "reward": units[value] * (centre[v] + noise[s, v, j])}
            for s, seed in enumerate(seeds) for i, centre in enumerate(centres) for v, value in enumerate(UNITS)
            for j in range(n_prompts)]
    points = pd.DataFrame([{"method": "mva", "point_id": f"p{i:02d}", "kind": "sft" if i == 0 else "grid",
                            "lam_concise": 0.0, "lam_positive": 0.0} for i in range(len(centres))])
    prompts = pd.DataFrame({"prompt_id": [f"q{j:03d}" for j in range(n_prompts)], "origin": "concise"})
    return pd.DataFrame(rows), points, prompts


CONCAVE_EVALUATION = {"bootstrap": 50, "ci": 0.95, "reference_point": "sft", "weightings": [[0.5, 0.5]],
                      "selection_weightings": None, "selection_fraction": 0.5, "interference_lambdas": [1.0],
                      "win_rate_target": "mva", "tie_tolerance": 0.0}


def test_selection_reaches_every_hull_vertex_whatever_the_units():
    """The issue's default run: raw rewards in words and shares let conciseness decide alone (2 distinct points)."""
    scores, points, prompts = concave_run(UNITS)
    tables = build_tables(scores, points, prompts, CONCAVE_EVALUATION, list(UNITS), seed=0)
    frontier = tables.frontiers.iloc[0]
    assert frontier.n_hull_vertices == 15  # every curve point; SFT at the origin is not
    reachable = frontier.n_hull_reachable
    assert reachable >= 6
    per_seed = tables.selections.groupby("seed")["point_id"].apply(set)
    assert list(frontier.n_selected_per_seed) == [reachable, reachable] and frontier.n_selected == reachable
    assert per_seed["1"] == per_seed["2"] and "p00" not in per_seed["1"]
    design = tables.design.iloc[0]
    assert design.scale_concise == pytest.approx(100.0, rel=0.3) and design.scale_positive == pytest.approx(0.01, rel=0.3)
    assert design.scale_basis == "concise=sft,positive=sft"

    split = split_prompts(prompts, 0.5)
    selection = seeded_rewards(scores).prompt_subset(split.loc[split["part"] == SELECTION, "prompt_id"].tolist())
    raw = select_held_out(selection, points, selection_weightings(list(UNITS), None), scales=np.ones(2))
    assert raw.groupby("seed")["point_id"].nunique().tolist() == [2, 2]  # raw units: conciseness decides

    rescaled, *_ = concave_run({**UNITS, "positive": UNITS["positive"] * 1000})
    again = build_tables(rescaled, points, prompts, CONCAVE_EVALUATION, list(UNITS), seed=0)
    key = ["seed", "weighting"]
    assert again.selections.set_index(key)["point_id"].equals(tables.selections.set_index(key)["point_id"])
    assert again.frontiers.iloc[0].hypervolume_std == pytest.approx(frontier.hypervolume_std)
    assert again.frontiers.iloc[0].hypervolume == pytest.approx(1000 * frontier.hypervolume)
