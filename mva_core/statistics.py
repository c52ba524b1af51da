"""All of the run's inference: paired resamples, seed-level intervals, verdicts with resolution, equivalence and
Holm-adjusted families, and evaluator checks. Point means, hypervolumes, win rates, efficacy, interference and
comparisons get their intervals and verdicts here and nowhere else.

Every row's statistic is a mean over training seeds and evaluation prompts of a per-(seed, prompt) quantity (a
reward, a paired difference, a win credit: ``Estimate.samples``), or a smooth function of such means (a
hypervolume). A mean is judged with the crossed seeds × prompts variance components of its samples
(``mva_core.variance``): a Student-t interval whose degrees of freedom come from the seeds and prompts, so that it
covers with 3 training seeds even when the seed carries most of the variance (a bootstrap of 3 seeds cannot: it
treats 3 draws as the whole population). A hypervolume is first replaced by its linear part in the per-prompt
data (``linearised``), found from the paired cluster resamples, and then judged in the same way.

One resample draws evaluation prompts with replacement; every training seed's answers to a drawn prompt come
along (prompts are the cluster). With two or more training seeds the seeds are drawn with replacement too. The
same resamples serve every method and every metric of a run, so a difference between two methods is computed
inside each resample (paired: ``Estimate.__sub__``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from mva_core.variance import Components, components, minimum_detectable_effect, observed_degrees_of_freedom

SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE = "supported", "contradicted", "equivalent", "inconclusive"
BETTER_THAN_CHANCE, WORSE_THAN_CHANCE, AT_CHANCE = ("better than chance", "worse than chance (inverted)",
                                                    "not distinguishable from chance")


@dataclass(frozen=True)
class Estimate:
    """A statistic on the full sample (``value``), in every resample (first axis of ``boot``, where resampled) and,
    for a mean, the per-(seed, prompt) quantity it is the mean of (``samples``, shape (n_seeds, *value.shape,
    n_prompts))."""

    value: np.ndarray
    boot: np.ndarray | None = None
    samples: np.ndarray | None = None
    skew: tuple[float, float] = (1.0, 1.0)  # reach of the interval below / above the estimate (``linearised``)

    def __sub__(self, other: Estimate | float) -> Estimate:
        """The paired difference: taken on the full sample, inside each shared resample and prompt by prompt (or
        the statistic shifted by a number)."""
        if not isinstance(other, Estimate):
            other = Estimate(np.asarray(other), np.asarray(other), np.asarray(other))

        def difference(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
            return None if x is None or y is None else x - y
        return Estimate(self.value - other.value, difference(self.boot, other.boot),
                        difference(self.samples, other.samples))

    def at(self, *index: int) -> Estimate:
        """The one statistic at ``index`` of ``value``."""
        def part(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[(slice(None), *index)]
        return Estimate(np.asarray(self.value[index]), part(self.boot), part(self.samples))


@dataclass(frozen=True)
class ClusterResamples:
    """How often each prompt and each training seed is drawn in each resample: shapes (n_boot, n_prompts) and
    (n_boot, n_seeds), as floats (with one seed its count is always 1)."""

    prompt_counts: np.ndarray
    seed_counts: np.ndarray

    @property
    def n_boot(self) -> int:
        return len(self.prompt_counts)

    @property
    def resamples_seeds(self) -> bool:
        return self.seed_counts.shape[1] > 1

    def means(self, x: np.ndarray) -> np.ndarray:
        """Resampled means of ``x`` of shape (n_seeds, ..., n_prompts): shape (n_boot, ...)."""
        n_seeds, n_prompts = x.shape[0], x.shape[-1]
        if (n_seeds, n_prompts) != (self.seed_counts.shape[1], self.prompt_counts.shape[1]):
            raise ValueError(f"array has {n_seeds} seeds x {n_prompts} prompts; resamples are for "
                             f"{self.seed_counts.shape[1]} x {self.prompt_counts.shape[1]}")
        over_prompts = x.reshape(-1, n_prompts) @ self.prompt_counts.T / n_prompts  # (seeds * inner, boot)
        over_prompts = over_prompts.reshape(n_seeds, -1, self.n_boot)
        out = np.einsum("sib,bs->bi", over_prompts, self.seed_counts) / n_seeds
        return out.reshape(self.n_boot, *x.shape[1:-1])

    def estimate(self, x: np.ndarray) -> Estimate:
        """Mean of ``x`` (n_seeds, ..., n_prompts) over seeds and prompts: value shape (...), boot (n_boot, ...)."""
        return Estimate(x.mean(axis=(0, -1)), self.means(x), x)


def _counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def cluster_resamples(n_prompts: int, n_seeds: int, n_boot: int, seed: int) -> ClusterResamples:
    """Seeded prompt (and, with n_seeds >= 2, seed) resamples."""
    if n_boot < 1 or n_prompts < 1 or n_seeds < 1:
        raise ValueError(f"need n_boot, n_prompts, n_seeds >= 1, got {n_boot}, {n_prompts}, {n_seeds}")
    rng = np.random.default_rng(seed)
    prompts = _counts(rng, n_prompts, n_boot)
    seeds = _counts(rng, n_seeds, n_boot) if n_seeds > 1 else np.ones((n_boot, 1))
    return ClusterResamples(prompts, seeds)


def linearised(statistic: Estimate, inputs: Sequence[Estimate], ci: float) -> Estimate:
    """``statistic`` (one number that is a function of the ``inputs``' means, e.g. a hypervolume of mean rewards)
    with ``samples``, its linear part in the inputs' per-(seed, prompt) data, and ``skew``, the shape of its
    resampling distribution.

    The gradient is the least-squares fit of the statistic's resamples on the inputs' resampled means (the average
    slope over the resampling cloud, robust to the kinks of a hypervolume); the samples are then scaled so that
    their resampled mean varies as much as the statistic does, which widens the interval for curvature and for any
    input not listed (e.g. a reference point recomputed per resample). A mean is its own linear part (scale 1).
    Judged like a mean, the statistic then gets the crossed seeds × prompts standard error and degrees of freedom
    that a bootstrap of 3 seeds cannot give (``judge``). A hypervolume's resamples are skewed (areas are products
    of coordinates): ``skew`` holds how far the ci percentile interval reaches below and above the estimate,
    relative to a normal interval of the same spread, and ``judge`` stretches each side of the t interval by it,
    keeping the percentile interval's shape (with one seed, symmetric t intervals halved the power to detect a
    true hypervolume difference at equal coverage in tests/test_comparisons.py). Only with one training seed:
    resampling 3 seeds gives a lumpy mixture of 10 seed combinations whose quantiles say little about the shape
    (coverage fell from 0.94 to 0.92 in tests/test_calibration.py), so there the interval stays symmetric.
    """
    n_boot = statistic.boot.shape[0]
    design = np.concatenate([e.boot.reshape(n_boot, -1) for e in inputs], axis=1)
    design = design - design.mean(axis=0)
    response = statistic.boot.reshape(n_boot) - statistic.boot.mean()
    gradient = np.linalg.lstsq(design, response, rcond=None)[0]
    fitted_sd, response_sd = float(np.std(design @ gradient)), float(np.std(response))
    scale = response_sd / fitted_sd if fitted_sd > 0 else (0.0 if response_sd == 0 else np.nan)
    data = np.concatenate([e.samples.reshape(e.samples.shape[0], -1, e.samples.shape[-1]) for e in inputs], axis=1)
    skew = (1.0, 1.0)
    if response_sd > 0 and data.shape[0] == 1:
        low, high = np.quantile(statistic.boot, [(1 - ci) / 2, (1 + ci) / 2])
        normal = float(special.ndtri((1 + ci) / 2)) * response_sd
        skew = (max(0.0, float(statistic.value - low) / normal), max(0.0, float(high - statistic.value) / normal))
    return Estimate(statistic.value, statistic.boot, scale * np.einsum("k,skp->sp", gradient, data), skew)


def verdict(ci_low: float, ci_high: float, null: float = 0.0, direction: int = 1) -> str:
    """'supported' when the interval excludes ``null`` on the claimed side (above it for ``direction`` +1, below it
    for -1), 'contradicted' when it excludes it on the other side, else 'inconclusive'."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    above, below = ci_low > null, ci_high < null
    if above or below:
        return SUPPORTED if above == (direction == 1) else CONTRADICTED
    return INCONCLUSIVE


def _tail(distance: float, se: float, df: float) -> float:
    """P(se·T > distance) for Student t with ``df``; an estimate with se = 0 is exact."""
    if not np.isfinite(se):
        return np.nan
    if se > 0:
        return float(special.stdtr(df, -distance / se))
    return 1.0 if distance < 0 else 0.5 if distance == 0 else 0.0


def win_rate_seed_floor(differences: np.ndarray) -> float:
    """The least seed variance component of a win rate that counts the signs of the paired reward ``differences``
    (seeds, prompts).

    Three seeds' win rates can read 1, 1, 1 with no spread although the seed decides the winner (each seed's rate
    is near 0 or 1): the rates' own variance components cannot see it, the differences' can. For normal seed
    effects and within-seed noise, a seed's win rate Φ((δ + a_s)/τ) varies across seeds with variance
    arcsin(ρ)/(2π) at δ = 0 (Sheppard's formula; less elsewhere), ρ being the seed's share of the differences'
    variance. 0 with one seed.
    """
    if differences.shape[0] < 2 or differences.shape[-1] < 2:
        return 0.0
    parts = components(differences)
    total = parts.seed + parts.prompt + parts.residual
    return float(np.arcsin(parts.seed / total) / (2 * np.pi)) if total > 0 else 0.0


def judge(estimate: Estimate, ci: float, null: float = 0.0, direction: int = 1, margin: float | None = None,
          seed_floor: float = 0.0) -> dict[str, float | str]:
    """One table row: ``estimate``'s value, its Student-t interval, resolution and verdict against ``null``.

    Standard error and degrees of freedom are those of the mean of ``estimate.samples`` over a crossed seeds ×
    prompts design (``mva_core.variance.components``, ``observed_degrees_of_freedom``; one seed: prompts only,
    df = n_prompts − 1). ``mde``: the smallest true
    difference a two-sided level-(1 − ci) test detects with 80% power; ``p_value``: two-sided, against ``null``.
    With an equivalence ``margin`` (same units as the estimate), ``p_equivalence`` is the larger p-value of the two
    one-sided tests of |difference| >= margin, and the verdict is 'equivalent' when the (2·ci − 1) interval lies
    inside ``null`` ± margin; 'supported' / 'contradicted' (the ci interval excludes ``null``) come first.
    ``seed_floor``: a least seed variance component (``win_rate_seed_floor``). A skewed statistic (``linearised``)
    has a standard error per side, each side's test using its own.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    samples, value, alpha = np.asarray(estimate.samples, dtype=float), float(estimate.value), 1 - ci
    se = df = np.nan
    if samples.shape[-1] >= 2 and np.isfinite(samples).all():  # else there is no spread to estimate
        parts, df = components(samples), observed_degrees_of_freedom(samples)
        if parts.seed < seed_floor:
            parts = Components(seed_floor, parts.prompt, parts.residual)
            df = min(df, parts.degrees_of_freedom(*samples.shape))
        se = float(np.sqrt(parts.variance_of_mean(*samples.shape)))
    se_low, se_high = se * estimate.skew[0], se * estimate.skew[1]  # equal but for a skewed statistic
    q = float(special.stdtrit(df, 1 - alpha / 2))
    distance = value - null
    equivalence = (np.nan if margin is None else
                   max(_tail(distance + margin, se_low, df), _tail(margin - distance, se_high, df)))
    se = (se_low + se_high) / 2  # = (ci_high - ci_low) / (2 q)
    row = {"estimate": value, "ci_low": value - q * se_low, "ci_high": value + q * se_high, "df": float(df),
           "se": se, "mde": minimum_detectable_effect(se, df, alpha) if np.isfinite(se) else np.nan,
           "p_value": float(np.minimum(1.0, 2 * _tail(abs(distance), se_low if distance > 0 else se_high, df))),
           "equivalence_margin": np.nan if margin is None else float(margin), "p_equivalence": equivalence}
    row["verdict"] = verdict(row["ci_low"], row["ci_high"], null, direction)
    if row["verdict"] == INCONCLUSIVE and row["p_equivalence"] < alpha:
        row["verdict"] = EQUIVALENT
    return row


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (a missing p-value counts as 1)."""
    p = np.nan_to_num(np.asarray(p_values, dtype=float), nan=1.0)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def with_holm(table: pd.DataFrame, ci: float) -> pd.DataFrame:
    """``table`` (rows from ``judge`` with a ``family`` column) with ``verdict_holm``: the row's verdict where its
    Holm-adjusted p-value within its family is below 1 − ci, else 'equivalent' where its Holm-adjusted
    ``p_equivalence`` is, else 'inconclusive'. Together the rows of a family make no false claim with probability
    at least ci."""
    if table.empty:
        return table.assign(verdict_holm=pd.Series(dtype=str))
    families = pd.factorize(table["family"])[0]
    p_values, p_equivalence = table["p_value"].to_numpy(float), table["p_equivalence"].to_numpy(float)
    adjusted, adjusted_equivalence = np.empty(len(table)), np.empty(len(table))
    for family in np.unique(families):
        rows = families == family
        adjusted[rows], adjusted_equivalence[rows] = holm(p_values[rows]), holm(p_equivalence[rows])
    alpha = 1 - ci
    claims = table["verdict"].isin([SUPPORTED, CONTRADICTED]).to_numpy() & (adjusted < alpha)
    verdicts = np.where(claims, table["verdict"], np.where(adjusted_equivalence < alpha, EQUIVALENT, INCONCLUSIVE))
    return table.assign(verdict_holm=verdicts)


def primary_mask(table: pd.DataFrame, name: str, selectors: Sequence[Mapping[str, object]]) -> pd.Series:
    """Which rows of the table ``name`` are pre-specified claims: rows equal, on every column a selector names,
    to one selector whose ``table`` is ``name`` (``evaluation.primary_rows``)."""
    mask = pd.Series(False, index=table.index)
    for selector in selectors:
        if selector["table"] != name:
            continue
        match = pd.Series(True, index=table.index)
        for column, wanted in selector.items():
            if column == "table":
                continue
            cells = table[column]
            match &= (cells == float(wanted)) if pd.api.types.is_numeric_dtype(cells) else (cells.astype(str) == str(wanted))
        mask |= match
    return mask


def t_interval(samples: Sequence[float], ci: float) -> tuple[float, float, float]:
    """Mean of a few independent ``samples`` (e.g. one per training seed) with a Student-t interval (NaN with one)."""
    n, mean = len(samples), float(np.mean(samples))
    half = float(stats.t.ppf(0.5 + ci / 2, n - 1) * np.std(samples, ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    return mean, mean - half, mean + half


def win_credit(a: np.ndarray, b: np.ndarray, tie_tol: float) -> np.ndarray:
    """Per-prompt credit of a against b: 1 win, 0.5 tie (|a − b| <= tie_tol), 0 loss."""
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
    diff = a - b
    return np.where(np.abs(diff) <= tie_tol, 0.5, (diff > 0).astype(float))


def accuracy_check(correct: int, n: int, ci: float = 0.95) -> dict[str, float | int | str]:
    """Pairwise accuracy with an exact (Clopper-Pearson) interval and whether it is better than chance (0.5), worse
    (the whole interval below 0.5: the evaluator ranks answers backwards) or not distinguishable from it."""
    if n < 1:
        raise ValueError("accuracy needs at least one pair")
    interval = stats.binomtest(correct, n).proportion_ci(confidence_level=ci, method="exact")
    check = BETTER_THAN_CHANCE if interval.low > 0.5 else WORSE_THAN_CHANCE if interval.high < 0.5 else AT_CHANCE
    return {"accuracy": correct / n, "n": n, "ci_low": float(interval.low), "ci_high": float(interval.high),
            "check": check}

