"""Does each value vector move its own value, and how much does adding another vector undo it?

- **Efficacy**: for each method, value v and λ on v's own single-vector line (other values at 0), the paired
  difference of v's mean reward against the SFT model; and the Spearman correlation of λ (0 included) with
  the mean own reward. The claim follows the sign of λ: above SFT for λ > 0, below SFT for λ < 0 (a negative λ
  subtracts the vector).
- **Interference** (grid methods): for each ordered value pair (u, v) and level λ (``evaluation.interference_lambdas``,
  default 1), R_u(λ_u = λ, λ_v = λ) − R_u(λ_u = λ, λ_v = 0), other values at 0: how much adding v's vector changes
  u's reward (λ > 1: under extrapolation). Claimed direction: it lowers it
  (the parameter interference the paper says decorrelation removes). Rows ``<method> − <baseline>`` compare a
  method's interference with a penalty-free baseline's; claimed direction: less interference than the baseline.
  A penalty that shrinks v's vector lowers interference by weakening v alone, so rows
  ``<method> − <baseline> @ λ_v = x (matched efficacy)`` compare with the baseline's v vector scaled to the same
  efficacy: per training seed, x is the baseline's λ level on v's line whose mean v reward is closest to the
  method's at λ_v = λ in that seed, chosen on the selection prompts and reported on the test prompts (``x`` lists
  one level per seed where they differ); ``matched_gap`` is the efficacy gap the match leaves (the method's mean v
  reward at λ_v = λ minus the baseline's at x, test prompts; 0 is a perfect match). A method whose vectors are
  computed from another's (a projection, a planted control) is compared with that method too; a planted control's
  rows claim more interference than the other method (it was built to interfere more).

Efficacy rows and plain interference rows choose nothing, so they use every evaluation prompt (selection and test);
matched-efficacy rows choose a λ, so they are reported on the test prompts only. Every row is judged by
``mva_core.statistics`` (Student t on the crossed seeds × prompts variance components of the row's per-prompt
difference); with ``margins`` (per value, in its reward's units) a row on value v (efficacy) or u (interference) can
read 'equivalent'. Each row has a Holm family: efficacy per value, interference per kind of row (within a method,
against a baseline, against a baseline at matched efficacy).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mva_core.contracts import lam_columns
from mva_core.rewards import SeededRewards
from mva_core.statistics import Estimate, judge, with_holm

EFFECT_COLUMNS = ["estimate", "ci_low", "ci_high", "n_prompts", "n_seeds", "verdict", "df", "se", "mde", "p_value",
                  "equivalence_margin", "p_equivalence", "family", "verdict_holm"]
ABOVE_SFT, BELOW_SFT = "above SFT", "below SFT"


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
    """Paired differences of single points' rewards on the prompts of ``reported``; ``selection`` (other prompts) is
    where choices such as the matched-efficacy λ are made; ``margins``: equivalence margin per value name."""

    def __init__(self, reported: SeededRewards, ci: float, selection: SeededRewards | None = None,
                 margins: Mapping[str, float] | None = None):
        self.reported, self.ci, self.selection, self.margins = reported, ci, selection, dict(margins or {})

    def rewards(self, method: str, point_id: str, value: str) -> np.ndarray:
        """Reported rewards (seeds, prompts) of one point on one value."""
        return _point_rewards(self.reported, method, point_id, value)

    def selection_means(self, method: str, point_id: str, value: str) -> np.ndarray:
        """Mean selection-prompt reward of one point on one value, per training seed."""
        return _point_rewards(self.selection, method, point_id, value).mean(axis=-1)

    def row(self, diff: np.ndarray, value: str, family: str, direction: int = 1) -> dict:
        """Estimate, CI, resolution and verdict of the mean of the paired difference ``diff`` (seeds, prompts) of
        ``value``'s reward, with the claimed ``direction`` (+1: above 0, -1: below); ``family``: its Holm family.
        Every row of the effect tables is built by one call (``mva_core.row_quantities`` relies on it)."""
        judged = judge(Estimate(diff.mean(), samples=diff), self.ci, direction=direction,
                       margin=self.margins.get(value))
        return {"n_prompts": diff.shape[-1], "n_seeds": diff.shape[0], **judged, "family": family}


def _with_holm(rows: list[dict], columns: list[str], ci: float) -> pd.DataFrame:
    """``rows`` as a table of ``columns`` with each row's Holm-adjusted verdict within its family."""
    return with_holm(pd.DataFrame(rows, columns=[c for c in columns if c != "verdict_holm"]), ci)[columns]


def efficacy_table(estimator: EffectEstimator, points: pd.DataFrame, values: Sequence[str]) -> pd.DataFrame:
    """One row per (method, value, λ ≠ 0) of v's single-vector line; ``claim`` (above SFT for λ > 0, below for
    λ < 0) is what the verdict judges; ``spearman`` of λ vs mean own reward. Pass an estimator over every evaluation
    prompt: no choice is made here."""
    rows = []
    for method in estimator.reported.keys.get_level_values("method").unique():
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
                direction = 1 if lam > 0 else -1
                rows.append({"method": method, "value": value, "lambda": lam,
                             "claim": ABOVE_SFT if direction == 1 else BELOW_SFT,
                             **estimator.row(estimator.rewards(method, pid, value) - sft, value, f"efficacy: {value}",
                                             direction),
                             "spearman": float(rho)})
    return _with_holm(rows, ["method", "value", "lambda", "claim", *EFFECT_COLUMNS, "spearman"], estimator.ci)


def _interference(estimator: EffectEstimator, lam_points: dict[tuple[float, ...], str], method: str,
                  values: Sequence[str], i: int, j: int, lam: float) -> np.ndarray | None:
    """R_u(λ_u = λ, λ_v = λ) − R_u(λ_u = λ, λ_v = 0) per (seed, prompt) of ``estimator`` (u, v = values i, j), or None
    without those points."""
    alone = tuple(lam if k == i else 0.0 for k in range(len(values)))
    both = tuple(lam if k in (i, j) else 0.0 for k in range(len(values)))
    if alone not in lam_points or both not in lam_points:
        return None
    return estimator.rewards(method, lam_points[both], values[i]) - estimator.rewards(method, lam_points[alone], values[i])


def interference_table(estimator: EffectEstimator, points: pd.DataFrame, values: Sequence[str],
                       baselines: Sequence[str], lambdas: Sequence[float] = (1.0,),
                       matched: EffectEstimator | None = None, references: Mapping[str, str] | None = None,
                       planted: Collection[str] = ()) -> pd.DataFrame:
    """Rows per (method, u, v, λ in ``lambdas``): R_u(λ, λ) − R_u(λ, 0); then ``<method> − <baseline>`` rows
    (paired), plain (``estimator``: every evaluation prompt) and, with ``matched`` (an estimator over the test
    prompts whose ``selection`` holds the selection prompts), at matched efficacy with ``matched_gap``.

    ``references`` (method -> the method its vectors are computed from) adds ``<method> − <reference>`` rows beside
    the baselines' (family ``interference: against <reference>``); the rows of a ``planted`` method (a control built
    to interfere more) claim more interference than the other method, the others less."""
    diffs: dict[tuple[str, str, str, float], np.ndarray] = {}
    by_method = {m: _lambda_points(points, m, values) for m in estimator.reported.keys.get_level_values("method").unique()}
    for method, lam_points in by_method.items():
        for lam in lambdas:
            for i, u in enumerate(values):
                for j, v in enumerate(values):
                    d = _interference(estimator, lam_points, method, values, i, j, lam) if i != j else None
                    if d is not None:
                        diffs[(method, u, v, lam)] = d
    rows = [{"method": m, "value_u": u, "value_v": v, "lambda": lam, "claim": "adding v lowers u",
             **estimator.row(d, u, "interference: within each method", direction=-1)}
            for (m, u, v, lam), d in diffs.items()]
    contrasts = [(m, b) for b in baselines for m in by_method if m != b]
    contrasts += [(m, r) for m, r in (references or {}).items() if r not in baselines and m in by_method]
    for m, baseline in contrasts:
        direction, more = (-1, "more") if m in planted else (1, "less")
        for (method, u, v, lam), d in diffs.items():
            if method == m and (baseline, u, v, lam) in diffs:
                rows.append({"method": f"{m} − {baseline}", "value_u": u, "value_v": v, "lambda": lam,
                             "claim": f"{m} interferes {more} than {baseline}",
                             **estimator.row(d - diffs[(baseline, u, v, lam)], u, f"interference: against {baseline}",
                                             direction)})
                if matched is not None:
                    rows += _matched_efficacy_rows(matched, by_method[m], by_method[baseline], values, m,
                                                   baseline, (u, v, lam), direction)
    return _with_holm(rows, ["method", "value_u", "value_v", "lambda", "claim", *EFFECT_COLUMNS, "matched_gap"],
                      estimator.ci)


def _matched_efficacy_rows(estimator: EffectEstimator, ours: dict[tuple[float, ...], str],
                           theirs: dict[tuple[float, ...], str], values: Sequence[str], method: str, baseline: str,
                           pair: tuple[str, str, float], direction: int = 1) -> list[dict]:
    """``method``'s interference (u <- v, both at λ) minus ``baseline``'s with v, in each training seed, at the level
    whose v efficacy on that seed's selection prompts matches the method's at λ (``ours``/``theirs``: λ vector ->
    point_id of the method and of the baseline); reported on ``estimator``'s (test) prompts; ``direction`` -1 claims
    more interference than the baseline."""
    u, v, level = pair
    i, j = values.index(u), values.index(v)

    def vec(lu: float, lv: float) -> tuple[float, ...]:
        return tuple(lu if k == i else lv if k == j else 0.0 for k in range(len(values)))

    levels = [lam for lam in sorted({key[j] for key in theirs})
              if lam > 0 and vec(0.0, lam) in theirs and vec(level, lam) in theirs]
    if not levels or vec(level, 0.0) not in theirs or vec(0.0, level) not in ours:
        return []
    target = estimator.selection_means(method, ours[vec(0.0, level)], v)  # (seeds,)
    gaps = np.stack([np.abs(estimator.selection_means(baseline, theirs[vec(0.0, x)], v) - target) for x in levels])
    chosen = [levels[k] for k in np.argmin(gaps, axis=0)]  # per seed; ties to the smaller level
    seeds = np.arange(len(chosen))
    matched = np.stack([estimator.rewards(baseline, theirs[vec(level, lam)], u)[s] for s, lam in zip(seeds, chosen)])
    matched = matched - estimator.rewards(baseline, theirs[vec(level, 0.0)], u)
    theirs_v = np.stack([estimator.rewards(baseline, theirs[vec(0.0, lam)], v)[s] for s, lam in zip(seeds, chosen)])
    gap = float((estimator.rewards(method, ours[vec(0.0, level)], v) - theirs_v).mean())
    label = "/".join(f"{lam:g}" for lam in chosen) if len(set(chosen)) > 1 else f"{chosen[0]:g}"
    ours_interference = _interference(estimator, ours, method, values, i, j, level)
    more = "more" if direction < 0 else "less"
    return [{"method": f"{method} − {baseline} @ λ_{v} = {label} (matched efficacy)", "value_u": u, "value_v": v,
             "lambda": level, "claim": f"{method} interferes {more} than {baseline} at equal efficacy of {v}",
             **estimator.row(ours_interference - matched, u, f"interference: against {baseline} at matched efficacy",
                             direction),
             "matched_gap": gap}]
