"""Held-out selection: evaluation prompts split into a selection part and a test part, and each method's
deployable point per preference weighting chosen on the selection part only.

A method with more grid points has more chances to look good by luck; choosing its point on prompts that are
not used to report it removes that advantage. Every method gets the same number of selected points (one per
weighting and training seed), so hypervolumes and win rates compare like with like.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

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


def select_held_out(rewards: SeededRewards, points: pd.DataFrame,
                    weightings: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """Per training seed, weighting and method: the point maximising Σ_v w_v·mean_v over ``rewards``' prompts.

    Pass the selection prompts only. Ties go to the smallest point_id. Returns columns seed, weighting,
    ``w_<value>``, method, point_id, kind, selection_score and the point's ``lam_*`` columns.
    """
    validate_table(points, POINTS.only(*KEY, "kind"))
    info = points.astype({"method": str, "point_id": str}).set_index(KEY)
    weights = np.array([[w.get(v, 0.0) for v in rewards.values] for w in weightings])
    labels = [weighting_label(w) for w in weightings]
    scores = np.einsum("spv,wv->swp", rewards.rewards.mean(axis=-1), weights)  # (seeds, weightings, points)
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
