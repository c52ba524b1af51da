"""Simulated evaluations with known true rewards, for calibrating the held-out comparison statistics."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from mva_core.comparisons import ALL_WEIGHTINGS, Comparator
from mva_core.frontier import hypervolumes
from mva_core.rewards import SeededRewards
from mva_core.selection import (
    select_held_out,
    selected_test_rewards,
    selection_weightings,
    weighting_label,
)
from mva_core.statistics import cluster_resamples

VALUES = ("a", "b")


def frontier_means(n_points: int, level: float) -> np.ndarray:
    """True mean rewards of a method: ``n_points`` on a concave trade-off curve scaled by ``level``, SFT first at 0."""
    angles = np.linspace(0, np.pi / 2, n_points - 1)
    curve = level * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.vstack([np.zeros((1, 2)), curve])


def simulate(rng: np.random.Generator, true_means: Mapping[str, np.ndarray], n_prompts: int, n_seeds: int = 1,
             noise: float = 1.0, prompt_sd: float = 1.0, seed_sd: float = 0.0):
    """Rewards = true mean + training-seed effect + prompt effect (shared by all points) + noise.

    Returns the rewards, the points table and the true per-seed means ``(seeds, points, values)``.
    """
    keys = [(m, f"p{i:02d}") for m, means in true_means.items() for i in range(len(means))]
    mu = np.concatenate(list(true_means.values()))  # (points, values)
    seed_mu = mu[None] + seed_sd * rng.normal(size=(n_seeds, *mu.shape))
    seed_mu[:, [i for i, (_, p) in enumerate(keys) if p == "p00"]] = 0.0  # SFT: the same model for every seed
    prompt = prompt_sd * rng.normal(size=(len(VALUES), n_prompts))
    rewards = seed_mu[..., None] + prompt[None, None] + noise * rng.normal(size=(*seed_mu.shape, n_prompts))
    index = pd.MultiIndex.from_tuples(keys, names=["method", "point_id"])
    order = index.argsort()
    tensor = SeededRewards(tuple(str(s) for s in range(n_seeds)), index[order], VALUES,
                           tuple(f"q{j:03d}" for j in range(n_prompts)), rewards[:, order])
    points = pd.DataFrame([{"method": m, "point_id": p, "kind": "sft" if p == "p00" else "grid"} for m, p in keys])
    return tensor, points, seed_mu[:, order]


def run_comparison(tensor: SeededRewards, points: pd.DataFrame, n_boot: int, seed: int, target: str = "A"):
    """Held-out selection on the first half of the prompts, comparisons on the second half."""
    half = len(tensor.prompts) // 2
    selection, test = tensor.prompt_subset(tensor.prompts[:half]), tensor.prompt_subset(tensor.prompts[half:])
    weightings = selection_weightings(VALUES, None)
    selections = select_held_out(selection, points, weightings)
    selected = selected_test_rewards(test, selections, weightings)
    sft = test.rewards[:, [i for i, k in enumerate(test.keys) if k[1] == "p00"]].mean(axis=(0, 1, -1))
    resamples = cluster_resamples(len(test.prompts), len(test.seeds), n_boot, seed)
    comparator = Comparator(selected, weightings, VALUES, sft, resamples)
    return comparator.comparisons(target), selections, weightings, sft


def true_differences(truth: np.ndarray, tensor: SeededRewards, selections: pd.DataFrame, weightings, reference,
                     noise: float, target: str = "A") -> pd.DataFrame:
    """True value of every comparison row given the selections (one training seed)."""
    labels = [weighting_label(w) for w in weightings]
    weights = np.array([[w[v] for v in VALUES] for w in weightings])

    def selected_means(method: str) -> np.ndarray:
        chosen = selections[selections["method"] == method].set_index("weighting")["point_id"]
        return np.stack([truth[0, tensor.keys.get_loc((method, chosen[label]))] for label in labels])  # (W, V)

    a = selected_means(target)
    rows = []
    for other in selections["method"].unique():
        if other == target:
            continue
        b = selected_means(other)
        hv = hypervolumes(np.stack([a, b]), reference)
        rows.append({"method_b": other, "metric": "hypervolume", "value": "", "weighting": "", "truth": hv[0] - hv[1]})
        weighted = ((a - b) * weights).sum(-1)
        win = stats.norm.cdf((a - b) / (noise * np.sqrt(2))) - 0.5
        for w, label in enumerate([*labels, ALL_WEIGHTINGS]):
            pick = slice(None) if label == ALL_WEIGHTINGS else w
            rows.append({"method_b": other, "metric": "weighted_reward", "value": "", "weighting": label,
                         "truth": np.mean(weighted[pick])})
            for v, value in enumerate(VALUES):
                rows.append({"method_b": other, "metric": "mean_reward", "value": value, "weighting": label,
                             "truth": np.mean((a - b)[pick, v])})
                rows.append({"method_b": other, "metric": "win_rate", "value": value, "weighting": label,
                             "truth": np.mean(win[pick, v])})
    return pd.DataFrame(rows)
