"""Held-out selection: evaluation prompts split into a selection part and a test part, and each method's
deployable point per preference weighting chosen on the selection part only.

A method with more grid points has more chances to look good by luck; choosing its point on prompts that are
not used to report it removes that advantage. Every method gets the same number of selected points (one per
weighting and training seed), so hypervolumes and win rates compare like with like.

Values are weighted on standardised rewards (reward / the value's scale, ``value_scales``): raw rewards come in
unrelated units (words, shares), and a weighting of raw rewards lets the value with the widest range decide alone.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from mva_core.contracts import EVALUATION_PROMPTS, POINTS, lam_columns, validate_table
from mva_core.rewards import KEY, SeededRewards

SELECTION, TEST = "selection", "test"


def split_prompts(prompts: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """``prompts`` with a ``part`` column: ``selection`` or ``test``.

    Within each ``origin`` (a value's eval split or a prompt set) prompts are ordered by their ``prompt_id`` (a
    hash of the conversation) and the first round(fraction·n) go to selection, so the split is deterministic,
    independent of file order and balanced across origins.
    """
    validate_table(prompts, EVALUATION_PROMPTS.only("prompt_id"))
    if not 0 < fraction < 1:
        raise ValueError(f"evaluation.selection_fraction must be in (0, 1), got {fraction}")
    table = prompts.copy()
    if "origin" not in table.columns:
        table["origin"] = ""
    table["part"] = TEST
    for _, group in table.groupby(table["origin"].fillna("").astype(str), sort=False):
        ordered = group.sort_values("prompt_id", kind="stable").index
        table.loc[ordered[: int(round(fraction * len(ordered)))], "part"] = SELECTION
    counts = table["part"].value_counts()
    if counts.get(SELECTION, 0) == 0 or counts.get(TEST, 0) == 0:
        raise ValueError(f"{len(table)} evaluation prompts split with fraction {fraction} leave "
                         f"{counts.get(SELECTION, 0)} for selection and {counts.get(TEST, 0)} for test; both need at "
                         "least one (raise evaluation.prompts_per_value or change evaluation.selection_fraction)")
    return table


def weighting_label(weights: Mapping[str, float]) -> str:
    """Stable text label of a weighting, e.g. ``helpful=0.7,harmless=0.3``."""
    return ",".join(f"{v}={w:g}" for v, w in weights.items())


def simplex_lattice(k: int, divisions: int) -> list[tuple[float, ...]]:
    """All weightings with k non-negative weights in steps of 1/divisions summing to 1."""
    return [tuple(c / divisions for c in combo)
            for combo in itertools.product(range(divisions + 1), repeat=k) if sum(combo) == divisions]


def selection_weightings(values: Sequence[str], configured: Sequence[Sequence[float]] | None,
                         win_rate_weightings: Sequence[Sequence[float]] = ()) -> list[dict[str, float]]:
    """The weightings at which every method selects a point.

    ``configured`` (``evaluation.selection_weightings``) is used as given; None means a dense sweep: the simplex
    lattice in steps of 0.1 for k = 2 (11 weightings), 0.25 for k = 3 (15), 0.5 beyond. The win-rate weightings
    (``evaluation.weightings``) are always added, so every win-rate target is a selection weighting.
    """
    k = len(values)
    if configured is None:
        configured = simplex_lattice(k, 10 if k == 2 else 4 if k == 3 else 2)
    result: dict[str, dict[str, float]] = {}
    for weights in [*configured, *win_rate_weightings]:
        if len(weights) != k:
            raise ValueError(f"weighting {list(weights)} has {len(weights)} entries; expected one per value {list(values)}")
        total = float(sum(weights))
        if not np.isfinite(total) or total <= 0 or min(weights) < 0:
            raise ValueError(f"weighting {list(weights)} must be non-negative with a positive sum")
        mapping = {v: float(w) for v, w in zip(values, weights)}
        result.setdefault(weighting_label(mapping), mapping)
    return list(result.values())


@dataclass(frozen=True)
class ValueScales:
    """One scale per value (in ``values`` order) dividing its rewards wherever values are weighted, and what each
    was computed from: ``sft`` (the SFT model's spread), ``all points`` (the floor when that is 0) or ``unit`` (1.0,
    when every reward of the value is the same)."""

    values: tuple[str, ...]
    scales: np.ndarray
    basis: tuple[str, ...]

    def columns(self) -> dict[str, float | str]:
        """``scale_<value>`` columns and ``scale_basis`` (e.g. ``concise=sft,positive=sft``), for ``tables/design``."""
        return {**{f"scale_{v}": float(s) for v, s in zip(self.values, self.scales)},
                "scale_basis": ",".join(f"{v}={b}" for v, b in zip(self.values, self.basis))}


def _pooled_sd(rewards: np.ndarray) -> np.ndarray:
    """Per value, the square root of the mean over (seed, point) of the variance over prompts of
    ``rewards[seed, point, value, prompt]`` (0 with fewer than two prompts or no points)."""
    if rewards.shape[1] == 0 or rewards.shape[-1] < 2:
        return np.zeros(rewards.shape[2])
    return np.sqrt(rewards.var(axis=-1, ddof=1).mean(axis=(0, 1)))


def value_scales(selection: SeededRewards, points: pd.DataFrame) -> ValueScales:
    """Each value's scale, from the selection prompts only and the same for every method: the standard deviation of
    the SFT model's per-prompt reward (the ``kind == "sft"`` points, λ = 0), pooled over training seeds (and over
    the SFT points of several methods); where that is 0 (or there is no SFT point), the pooled standard deviation of
    every point's per-prompt reward; where that is 0 too, 1.0.

    The SFT model is the one point every method shares, so its prompt-to-prompt spread is a unit no method's training
    moves; a standardised difference of 1 is one typical prompt-to-prompt difference of the starting model.
    """
    validate_table(points, POINTS.only(*KEY, "kind"))
    kinds = points.astype({"method": str, "point_id": str}).set_index(KEY)["kind"]
    is_sft = np.array([kinds.get(key) == "sft" for key in selection.keys])
    candidates = [("sft", _pooled_sd(selection.rewards[:, is_sft])), ("all points", _pooled_sd(selection.rewards)),
                  ("unit", np.ones(len(selection.values)))]
    typical = np.abs(selection.rewards).mean(axis=(0, 1, 3))
    scales, basis = np.ones(len(selection.values)), []
    for v in range(len(selection.values)):
        name, sd = next((name, sd) for name, sd in candidates if sd[v] > 1e-12 * (1.0 + typical[v]) or name == "unit")
        scales[v] = sd[v]
        basis.append(name)
    return ValueScales(selection.values, scales, tuple(basis))


def hull_vertices(means: np.ndarray) -> np.ndarray:
    """True for the rows of ``means`` (points × values) that are the only maximiser of Σ_v w_v·x_v for some
    non-negative weighting w: the vertices of the frontier's convex hull, the only points a weighted sum selects
    for sure (exact duplicates count as one: both are vertices).

    One linear programme per point: maximise t subject to w·(x_j − x_i) + t <= 0 for every other distinct point j,
    w >= 0, Σw = 1; point i is a vertex when t > 0.
    """
    arr = np.asarray(means, dtype=float)
    n, k = arr.shape
    vertex = np.zeros(n, dtype=bool)
    cost = np.zeros(k + 1)
    cost[-1] = -1.0  # maximise t
    for i in range(n):
        others = arr[(arr != arr[i]).any(axis=1)]
        if len(others) == 0:
            vertex[i] = True
            continue
        result = linprog(cost, A_ub=np.hstack([others - arr[i], np.ones((len(others), 1))]), b_ub=np.zeros(len(others)),
                         A_eq=np.append(np.ones(k), 0.0)[None], b_eq=[1.0], bounds=[(0, None)] * k + [(None, None)],
                         method="highs")
        vertex[i] = result.status == 0 and -result.fun > 1e-9 * (1.0 + np.abs(arr).max())
    return vertex


def hull_counts(selection: SeededRewards, weightings: Sequence[Mapping[str, float]],
                scales: np.ndarray) -> pd.DataFrame:
    """Per method: ``n_hull_vertices`` (vertices of the convex hull of its points' standardised selection-prompt
    means, pooled over seeds) and ``n_hull_reachable`` (those the ``weightings`` select: the most distinct points the
    weighting lattice can pick, ties to the smallest point_id as in ``select_held_out``)."""
    weights = np.array([[w.get(v, 0.0) for v in selection.values] for w in weightings])
    means = selection.rewards.mean(axis=(0, -1)) / scales  # (points, values)
    rows = []
    for method in selection.keys.get_level_values("method").unique():
        member = means[selection.method_rows(method)]  # rows are sorted by point_id
        vertex = hull_vertices(member)
        chosen = set(np.argmax(member @ weights.T, axis=0).tolist())
        rows.append({"method": method, "n_hull_vertices": int(vertex.sum()),
                     "n_hull_reachable": int(sum(vertex[i] for i in chosen))})
    return pd.DataFrame(rows)


def select_held_out(rewards: SeededRewards, points: pd.DataFrame, weightings: Sequence[Mapping[str, float]],
                    scales: np.ndarray | None = None) -> pd.DataFrame:
    """Per training seed, weighting and method: the point maximising Σ_v w_v·mean_v / scale_v over ``rewards``'
    prompts (standardised rewards; ``scales`` in ``rewards.values`` order, default ``value_scales(rewards,
    points)``).

    Pass the selection prompts only. Ties go to the smallest point_id. Returns columns seed, weighting,
    ``w_<value>``, method, point_id, kind, selection_score (the standardised score maximised) and the point's
    ``lam_*`` columns.
    """
    validate_table(points, POINTS.only(*KEY, "kind"))
    if scales is None:
        scales = value_scales(rewards, points).scales
    info = points.astype({"method": str, "point_id": str}).set_index(KEY)
    weights = np.array([[w.get(v, 0.0) for v in rewards.values] for w in weightings])
    labels = [weighting_label(w) for w in weightings]
    standardised = rewards.rewards.mean(axis=-1) / np.asarray(scales, dtype=float)  # (seeds, points, values)
    scores = np.einsum("spv,wv->swp", standardised, weights)  # (seeds, weightings, points)
    rows = []
    for method in rewards.keys.get_level_values("method").unique():
        member = rewards.method_rows(method)
        ids = np.array([rewards.keys[i][1] for i in member])
        order = np.argsort(ids, kind="stable")  # first maximum = smallest point_id
        best = member[order][np.argmax(scores[:, :, member[order]], axis=-1)]  # (seeds, weightings)
        for s, seed in enumerate(rewards.seeds):
            for w, label in enumerate(labels):
                key = rewards.keys[best[s, w]]
                point = info.loc[key]
                rows.append({"seed": seed, "weighting": label, **{f"w_{v}": x for v, x in zip(rewards.values, weights[w])},
                             "method": key[0], "point_id": key[1], "kind": point["kind"],
                             "selection_score": float(scores[s, w, best[s, w]]),
                             **{c: point[c] for c in lam_columns(points)}})
    return pd.DataFrame(rows)


def selected_test_rewards(test: SeededRewards, selections: pd.DataFrame,
                          weightings: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """Per method, the test rewards of its selected points: shape (seeds, weightings, values, test prompts)."""
    labels = [weighting_label(w) for w in weightings]
    out: dict[str, np.ndarray] = {}
    for method, part in selections.groupby("method", sort=False):
        chosen = part.set_index(["seed", "weighting"])["point_id"]
        rows = np.array([[test.keys.get_loc((method, chosen[(seed, label)])) for label in labels] for seed in test.seeds])
        out[str(method)] = test.rewards[np.arange(len(test.seeds))[:, None], rows]
    return out
