"""Does each value vector move its own value, and how much does adding another vector undo it?

- **Efficacy**: for each method, value v and λ on v's own single-vector line (other values at 0), the paired
  difference of v's mean test reward against the SFT model; and the Spearman correlation of λ (0 included) with
  the mean own reward. Claimed direction: above SFT.
- **Interference** (grid methods): for each ordered value pair (u, v) and level λ (``evaluation.interference_lambdas``,
  default 1), R_u(λ_u = λ, λ_v = λ) − R_u(λ_u = λ, λ_v = 0), other values at 0: how much adding v's vector changes
  u's reward (λ > 1: under extrapolation). Claimed direction: it lowers it
  (the parameter interference the paper says decorrelation removes). Rows ``<method> − <baseline>`` compare a
  method's interference with a penalty-free baseline's; claimed direction: less interference than the baseline.
  A penalty that shrinks v's vector lowers interference by weakening v alone, so rows
  ``<method> − <baseline> @ λ_v = x (matched efficacy)`` compare with the baseline's v vector scaled to the same
  efficacy: x is the baseline's λ level on v's line whose mean v reward is closest to the method's at λ_v = λ,
  chosen on the selection prompts and reported on the test prompts.

All estimates on the test prompts, judged by ``mva_core.statistics`` (Student t on the crossed seeds × prompts
variance components of each row's per-prompt difference); with ``margins`` (per value, in its reward's units) a row
on value v (efficacy) or u (interference) can read 'equivalent'. Each row has a Holm family: efficacy per value,
interference per kind of row (within a method, against a baseline, at matched efficacy).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mva_core.contracts import lam_columns
from mva_core.rewards import SeededRewards
from mva_core.statistics import Estimate, judge, with_holm

EFFECT_COLUMNS = ["estimate", "ci_low", "ci_high", "n_prompts", "n_seeds", "verdict", "df", "se", "mde", "p_value",
                  "equivalence_margin", "p_equivalence", "family", "verdict_holm"]


def _lambda_points(points: pd.DataFrame, method: str, values: Sequence[str]) -> dict[tuple[float, ...], str]:
    """λ vector (in ``values`` order) -> point_id of a λ-combination method (MODPO points are not λ vectors)."""
    part = points[points["method"].astype(str) == method]
    if "adapter" in part.columns and part["adapter"].fillna("").astype(str).ne("").any():
        return {}
    cols = [f"lam_{v}" for v in values]
    if not set(cols) <= set(lam_columns(part)):
        return {}
    return {tuple(float(x) for x in row[cols]): str(row["point_id"]) for _, row in part.iterrows()}


def _point_rewards(table: SeededRewards, method: str, point_id: str, value: str) -> np.ndarray:
    return table.rewards[:, table.keys.get_loc((method, point_id)), table.values.index(value)]


class EffectEstimator:
    """Paired differences of single points' rewards on the test prompts; ``selection`` (other prompts) is where
    choices such as the matched-efficacy λ are made; ``margins``: equivalence margin per value name."""

    def __init__(self, test: SeededRewards, ci: float, selection: SeededRewards | None = None,
                 margins: Mapping[str, float] | None = None):
        self.test, self.ci, self.selection, self.margins = test, ci, selection, dict(margins or {})

    def rewards(self, method: str, point_id: str, value: str) -> np.ndarray:
        """Test rewards (seeds, prompts) of one point on one value."""
        return _point_rewards(self.test, method, point_id, value)

    def selection_mean(self, method: str, point_id: str, value: str) -> float:
        """Mean selection-prompt reward of one point on one value."""
        return float(_point_rewards(self.selection, method, point_id, value).mean())

    def row(self, diff: np.ndarray, value: str, family: str, direction: int = 1) -> dict:
        """Estimate, CI, resolution and verdict of the mean of the paired difference ``diff`` (seeds, prompts) of
        ``value``'s reward, with the claimed ``direction`` (+1: above 0, -1: below)."""
        judged = judge(Estimate(diff.mean(), samples=diff), self.ci, direction=direction,
                       margin=self.margins.get(value))
        return {"n_prompts": diff.shape[-1], "n_seeds": diff.shape[0], **judged, "family": family}


def efficacy_table(estimator: EffectEstimator, points: pd.DataFrame, values: Sequence[str]) -> pd.DataFrame:
    """One row per (method, value, λ ≠ 0) of v's single-vector line; ``spearman`` of λ vs mean own reward."""
    rows = []
    for method in estimator.test.keys.get_level_values("method").unique():
        lam_points = _lambda_points(points, method, values)
        origin = lam_points.get(tuple(0.0 for _ in values))
        if origin is None:
            continue
        for i, value in enumerate(values):
            line = sorted((vec[i], pid) for vec, pid in lam_points.items()
                          if vec[i] != 0 and all(x == 0 for j, x in enumerate(vec) if j != i))
            if not line:
                continue
            sft = estimator.rewards(method, origin, value)
            means = [sft.mean()] + [estimator.rewards(method, pid, value).mean() for _, pid in line]
            rho = stats.spearmanr([0.0] + [lam for lam, _ in line], means).statistic if len(line) > 1 else np.nan
            for lam, pid in line:
                rows.append({"method": method, "value": value, "lambda": lam,
                             **estimator.row(estimator.rewards(method, pid, value) - sft, value, f"efficacy: {value}"),
                             "spearman": float(rho)})
    columns = ["method", "value", "lambda", *EFFECT_COLUMNS, "spearman"]
    return with_holm(pd.DataFrame(rows, columns=[c for c in columns if c != "verdict_holm"]), estimator.ci)[columns]


def interference_table(estimator: EffectEstimator, points: pd.DataFrame, values: Sequence[str],
                       baselines: Sequence[str], lambdas: Sequence[float] = (1.0,)) -> pd.DataFrame:
    """Rows per (method, u, v, λ in ``lambdas``): R_u(λ, λ) − R_u(λ, 0); then ``<method> − <baseline>`` rows
    (paired), plain and at matched efficacy."""
    diffs: dict[tuple[str, str, str, float], np.ndarray] = {}
    by_method = {m: _lambda_points(points, m, values) for m in estimator.test.keys.get_level_values("method").unique()}
    for method, lam_points in by_method.items():
        for lam in lambdas:
            for i, u in enumerate(values):
                for j, v in enumerate(values):
                    alone = tuple(lam if k == i else 0.0 for k in range(len(values)))
                    both = tuple(lam if k in (i, j) else 0.0 for k in range(len(values)))
                    if i != j and alone in lam_points and both in lam_points:
                        diffs[(method, u, v, lam)] = (estimator.rewards(method, lam_points[both], u)
                                                      - estimator.rewards(method, lam_points[alone], u))
    rows = [{"method": m, "value_u": u, "value_v": v, "lambda": lam, "claim": "adding v lowers u",
             **estimator.row(d, u, "interference: within each method", direction=-1)}
            for (m, u, v, lam), d in diffs.items()]
    for baseline in baselines:
        for (m, u, v, lam), d in diffs.items():
            if m != baseline and (baseline, u, v, lam) in diffs:
                rows.append({"method": f"{m} − {baseline}", "value_u": u, "value_v": v, "lambda": lam,
                             "claim": f"{m} interferes less than {baseline}",
                             **estimator.row(d - diffs[(baseline, u, v, lam)], u, f"interference: against {baseline}")})
                if estimator.selection is not None:
                    rows += _matched_efficacy_rows(estimator, by_method[m], by_method[baseline], values, m,
                                                   baseline, (u, v, lam), d)
    columns = ["method", "value_u", "value_v", "lambda", "claim", *EFFECT_COLUMNS]
    return with_holm(pd.DataFrame(rows, columns=[c for c in columns if c != "verdict_holm"]), estimator.ci)[columns]


def _matched_efficacy_rows(estimator: EffectEstimator, ours: dict[tuple[float, ...], str],
                           theirs: dict[tuple[float, ...], str], values: Sequence[str], method: str, baseline: str,
                           pair: tuple[str, str, float], interference: np.ndarray) -> list[dict]:
    """``method``'s interference (u <- v, both at λ) minus ``baseline``'s with v at the level whose v efficacy
    matches the method's at λ (``ours``/``theirs``: λ vector -> point_id of the method and of the baseline)."""
    u, v, level = pair
    i, j = values.index(u), values.index(v)

    def vec(lu: float, lv: float) -> tuple[float, ...]:
        return tuple(lu if k == i else lv if k == j else 0.0 for k in range(len(values)))

    levels = [lam for lam in sorted({key[j] for key in theirs})
              if lam > 0 and vec(0.0, lam) in theirs and vec(level, lam) in theirs]
    if not levels or vec(level, 0.0) not in theirs or vec(0.0, level) not in ours:
        return []
    target = estimator.selection_mean(method, ours[vec(0.0, level)], v)
    lam = min(levels, key=lambda x: abs(estimator.selection_mean(baseline, theirs[vec(0.0, x)], v) - target))
    matched = (estimator.rewards(baseline, theirs[vec(level, lam)], u)
               - estimator.rewards(baseline, theirs[vec(level, 0.0)], u))
    return [{"method": f"{method} − {baseline} @ λ_{v} = {lam:g} (matched efficacy)", "value_u": u, "value_v": v,
             "lambda": level, "claim": f"{method} interferes less than {baseline} at equal efficacy of {v}",
             **estimator.row(interference - matched, u, f"interference: against {baseline} at matched efficacy")}]
