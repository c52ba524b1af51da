"""Preference-weighted point selection and prompt-level win rates of a target method against baselines."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mva_core.frontier import (
    KEY,
    attach_points,
    bootstrap_counts,
    check_columns,
    lam_columns,
    percentile_ci,
    reward_tensor,
    value_columns,
)


def weighting_label(weights: Mapping[str, float]) -> str:
    """Stable text label of a weighting, e.g. ``helpful=0.7,harmless=0.3``."""
    return ",".join(f"{v}={w:g}" for v, w in weights.items())


def _check_weighting(weights: Mapping[str, float], values: Sequence[str]) -> None:
    unknown = [v for v in weights if v not in values]
    if unknown or not weights:
        raise ValueError(f"weighting {dict(weights)} names unknown values {unknown}; known values {list(values)}")


def select_points(
    wide: pd.DataFrame,
    points: pd.DataFrame,
    weightings: Sequence[Mapping[str, float]],
) -> pd.DataFrame:
    """Per weighting and method, the point maximising Σ w_v·mean_v (values absent from a weighting weigh 0).

    Ties go to the smallest point_id. Returns columns weighting, ``w_<value>``, method, point_id, kind,
    score and the point's ``lam_*`` columns.
    """
    labels = [weighting_label(w) for w in weightings]
    if not labels or len(set(labels)) < len(labels):
        raise ValueError(f"weightings must be non-empty and distinct, got {labels}")
    values = value_columns(wide)
    table = attach_points(wide[values], points)
    rows = []
    for weights in weightings:
        _check_weighting(weights, values)
        w = np.array([weights.get(v, 0.0) for v in values], dtype=float)
        scored = table.assign(score=table[values].to_numpy(dtype=float) @ w)
        best = scored.sort_values(["method", "score", "point_id"], ascending=[True, False, True])
        best = best.drop_duplicates("method")
        best = best.assign(weighting=weighting_label(weights), **{f"w_{v}": x for v, x in zip(values, w)})
        rows.append(best)
    cols = ["weighting"] + [f"w_{v}" for v in values] + KEY + ["kind", "score"] + lam_columns(points)
    return pd.concat(rows, ignore_index=True)[cols]


def _outcomes(diff: np.ndarray, tie_tol: float) -> np.ndarray:
    """Per-prompt credit: 1 win, 0.5 tie (|diff| <= tie_tol), 0 loss."""
    return np.where(np.abs(diff) <= tie_tol, 0.5, (diff > 0).astype(float))


def win_rates(
    scores: pd.DataFrame,
    selections: pd.DataFrame,
    target_method: str = "mva",
    tie_tol: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Prompt-by-prompt comparison of the target's selected point against every other method's, per value.

    ``win_rate = (wins + ties/2) / n`` with a percentile-bootstrap CI over prompts (one resample set shared
    by all comparisons); ``strict_win_rate = wins / (wins + losses)`` (NaN if every prompt ties).
    """
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
    check_columns(selections, ["weighting"] + KEY, "selections")
    tensor = reward_tensor(scores)
    counts = bootstrap_counts(len(tensor.prompts), n_boot, seed)
    rows = []
    for weighting, group in selections.groupby("weighting", sort=False):
        chosen = dict(zip(group["method"].astype(str), group["point_id"].astype(str)))
        if target_method not in chosen:
            raise ValueError(f"target method {target_method!r} has no selected point for weighting {weighting!r}")
        target = tensor.rewards[tensor.row(target_method, chosen[target_method])]
        for baseline, point_id in chosen.items():
            if baseline == target_method:
                continue
            other = tensor.rewards[tensor.row(baseline, point_id)]
            for v, value in enumerate(tensor.values):
                diff = target[v] - other[v]
                credit = _outcomes(diff, tie_tol)
                wins, ties = int((credit == 1).sum()), int((credit == 0.5).sum())
                losses = len(diff) - wins - ties
                low, high = percentile_ci(counts @ credit / len(diff), ci)
                rows.append(
                    {
                        "weighting": weighting,
                        "target": target_method,
                        "target_point": chosen[target_method],
                        "baseline": baseline,
                        "baseline_point": point_id,
                        "value": value,
                        "wins": wins,
                        "ties": ties,
                        "losses": losses,
                        "n": len(diff),
                        "win_rate": credit.mean(),
                        "strict_win_rate": wins / (wins + losses) if wins + losses else np.nan,
                        "ci_low": float(low),
                        "ci_high": float(high),
                    }
                )
    return pd.DataFrame(rows)
