"""Variance components of a crossed seeds × prompts design, and the standard error of its grand mean.

Every training seed answers the same evaluation prompts, so a per-prompt quantity ``y[s, p]`` (a reward, a paired
difference, an interference contrast) follows ``y = μ + a_s + b_p + e_sp``: a seed effect shared by all prompts
of that seed, a prompt effect shared by all seeds, and a residual (interaction and noise). The grand mean's variance
is ``σ_a²/S + σ_b²/P + σ_e²/(S·P)``; the two-way ANOVA mean squares estimate each component (moment estimators,
truncated at 0), and Satterthwaite's formula gives the degrees of freedom of the standard error, so that a
Student-t interval covers with 3 seeds even when the seed carries most of the variance (a plain bootstrap of 3
seeds under-covers: it cannot see that 3 draws say little about a spread). With one seed only the prompt and
residual components are estimable: the interval then covers prompt sampling, conditional on that seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

SEED_MEAN_SQUARE_CONFIDENCE = 0.75  # one-sided level of the seed mean square's upper limit in the observed df


@dataclass(frozen=True)
class Components:
    """Variance components of ``y[s, p]``: ``seed`` (σ_a², NaN with one seed), ``prompt`` (σ_b²) and ``residual``
    (σ_e²; with one seed the prompt and residual parts cannot be separated and ``prompt`` holds both)."""

    seed: float
    prompt: float
    residual: float

    def variance_of_mean(self, n_seeds: int, n_prompts: int) -> float:
        """Variance of the grand mean over ``n_seeds`` × ``n_prompts`` (the seed part is left out when unknown)."""
        seed = 0.0 if np.isnan(self.seed) else self.seed / n_seeds
        return seed + self.prompt / n_prompts + self.residual / (n_seeds * n_prompts)

    def degrees_of_freedom(self, n_seeds: int, n_prompts: int) -> float:
        """Degrees of freedom of ``variance_of_mean`` for a design of this size.

        Satterthwaite's formula for ``(MS_seed + MS_prompt - MS_res) / (S·P)`` (expected mean squares
        ``σ_e² + P·σ_a²``, ``σ_e² + S·σ_b²``, ``σ_e²``) is liberal with 3 seeds, because the weights it uses are
        themselves estimated from 3 draws (coverage 0.93 at seed shares 0.5-0.75 in tests/test_variance.py). The
        small-sample correction: the seed term's share ``w`` of the variance cannot carry more than ``S - 1``
        degrees of freedom, so ``1/df = w/(S-1) + (1-w)/df_Satterthwaite`` (coverage 0.94-0.97 for shares 0-1).
        """
        if n_seeds < 2 or np.isnan(self.seed):
            return float(n_prompts - 1)
        return _degrees_of_freedom(self.residual + n_prompts * self.seed, self.residual + n_seeds * self.prompt,
                                   self.residual, n_seeds, n_prompts)


def _degrees_of_freedom(ms_seed: float, ms_prompt: float, ms_residual: float, n_seeds: int, n_prompts: int) -> float:
    """Satterthwaite's degrees of freedom of ``(MS_seed + MS_prompt - MS_res) / (S·P)`` with the small-sample
    correction of ``Components.degrees_of_freedom``."""
    terms = [(ms_seed, n_seeds - 1), (ms_prompt, n_prompts - 1), (-ms_residual, (n_seeds - 1) * (n_prompts - 1))]
    total = sum(ms for ms, _ in terms)
    if total <= 0:
        return float((n_seeds - 1) * (n_prompts - 1))
    satterthwaite = total ** 2 / sum(ms ** 2 / df for ms, df in terms)
    share = (ms_seed - ms_residual) / total
    return float(1 / (share / (n_seeds - 1) + (1 - share) / satterthwaite))


def _mean_squares(y: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares (seed, prompt, residual) of ``y`` (n_seeds >= 2, n_prompts >= 2)."""
    n_seeds, n_prompts = y.shape
    grand = y.mean()
    seed_means, prompt_means = y.mean(axis=1), y.mean(axis=0)
    ms_seed = n_prompts * np.sum((seed_means - grand) ** 2) / (n_seeds - 1)
    ms_prompt = n_seeds * np.sum((prompt_means - grand) ** 2) / (n_prompts - 1)
    residuals = y - seed_means[:, None] - prompt_means[None, :] + grand
    ms_residual = np.sum(residuals ** 2) / ((n_seeds - 1) * (n_prompts - 1))
    return float(ms_seed), float(ms_prompt), float(ms_residual)


def components(y: np.ndarray) -> Components:
    """Moment estimates of the components of ``y`` with shape (n_seeds, n_prompts) (two-way ANOVA, no replicates)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"need an array of shape (n_seeds, n_prompts >= 2), got {y.shape}")
    n_seeds, n_prompts = y.shape
    if n_seeds == 1:
        return Components(np.nan, float(np.var(y[0], ddof=1)), 0.0)
    ms_seed, ms_prompt, ms_residual = _mean_squares(y)
    return Components(seed=max(0.0, (ms_seed - ms_residual) / n_prompts),
                      prompt=max(0.0, (ms_prompt - ms_residual) / n_seeds),
                      residual=ms_residual)


def observed_degrees_of_freedom(y: np.ndarray) -> float:
    """Degrees of freedom of the standard error of ``y``'s grand mean (n_seeds, n_prompts), for its interval and
    p-value.

    ``Components.degrees_of_freedom`` of the estimated components covers at 95% but leaves the far tail liberal
    (at 3 seeds with seed share 0.5, p < 0.0025 occurs 3.7 times too often, which Holm's adjustment reads): a
    seed mean square small by chance shrinks the standard error and raises the degrees of freedom at once. Here
    the seed mean square enters the degrees of freedom at its 75% upper confidence limit
    (``MS_seed·(S−1)/χ²_{S−1, 0.25}``; the standard error keeps the estimate): at 3 seeds and seed shares 0-1,
    coverage 0.95-0.986 and p < 0.0025 at most about 1.3 times nominal (200,000 simulated runs per share; the
    Holm families of tests/test_calibration.py). With 2 seeds the far tail stays liberal at moderate seed shares.
    """
    y = np.asarray(y, dtype=float)
    n_seeds, n_prompts = y.shape
    if n_seeds == 1:
        return float(n_prompts - 1)
    return degrees_of_freedom_from_mean_squares(*_mean_squares(y), n_seeds, n_prompts)


def degrees_of_freedom_from_mean_squares(ms_seed: float, ms_prompt: float, ms_residual: float, n_seeds: int,
                                         n_prompts: int) -> float:
    """``observed_degrees_of_freedom`` of a design with these two-way ANOVA mean squares (n_seeds >= 2), e.g. of a
    simulated run (``mva_core.planning``)."""
    upper = ms_seed * (n_seeds - 1) / special.chdtri(n_seeds - 1, SEED_MEAN_SQUARE_CONFIDENCE)
    return _degrees_of_freedom(max(upper, ms_residual), max(ms_prompt, ms_residual), ms_residual, n_seeds, n_prompts)


def mean_interval(y: np.ndarray, ci: float) -> tuple[float, float, float, float, float]:
    """``(mean, ci_low, ci_high, se, df)`` of the grand mean of ``y`` (n_seeds, n_prompts): Student t with
    ``observed_degrees_of_freedom``."""
    y = np.asarray(y, dtype=float)
    parts = components(y)
    n_seeds, n_prompts = y.shape
    se = float(np.sqrt(parts.variance_of_mean(n_seeds, n_prompts)))
    df = observed_degrees_of_freedom(y)
    half = float(stats.t.ppf(0.5 + ci / 2, df)) * se
    mean = float(y.mean())
    return mean, mean - half, mean + half, se, df


def minimum_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.80) -> float:
    """The smallest true difference a two-sided level-``alpha`` test with this ``se`` detects with ``power``:
    ``(q_{1-α/2} + q_power) · se``, quantiles of Student t with ``df`` (normal when ``df`` is infinite)."""
    return float((special.stdtrit(df, 1 - alpha / 2) + special.stdtrit(df, power)) * se)  # t quantiles (fast)
