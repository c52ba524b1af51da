"""Paired cluster bootstrap, percentile intervals, three-way verdicts and evaluator checks.

One resample draws evaluation prompts with replacement; every training seed's answers to a drawn prompt come
along (prompts are the cluster). With two or more training seeds the seeds are drawn with replacement too (a
crossed two-stage resample), so intervals also cover training randomness. The same resamples serve every method
and every metric of a run, so a difference between two methods is computed inside each resample (paired).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
BETTER_THAN_CHANCE, AT_CHANCE = "better than chance", "not distinguishable from chance"


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


def percentile_interval(boot: np.ndarray, ci: float, n_clusters: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (the resamples).

    With ``n_clusters`` (the number of resampled prompts) it is the *expanded* percentile interval (Hesterberg
    2015): the tail probability is taken at Φ(−sqrt(n/(n−1))·t_{n−1}) instead of (1 − ci)/2, which corrects the
    plain percentile interval's under-coverage with few prompts (about 0.91 instead of 0.95 at 12 prompts,
    measured in tests/test_comparisons.py) and keeps bounded statistics inside their range.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    tail = (1 - ci) / 2
    if n_clusters is not None and n_clusters > 1:
        tail = float(stats.norm.cdf(-np.sqrt(n_clusters / (n_clusters - 1)) * stats.t.ppf(1 - tail, n_clusters - 1)))
    low, high = np.quantile(boot, [tail, 1 - tail], axis=0)
    return low, high


def verdict(ci_low: float, ci_high: float) -> str:
    """'supported' when the interval excludes 0 on the claimed (positive) side, 'contradicted' on the other."""
    if ci_low > 0:
        return SUPPORTED
    if ci_high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def accuracy_check(correct: int, n: int, ci: float = 0.95) -> dict[str, float | int | str]:
    """Pairwise accuracy with an exact (Clopper-Pearson) interval and whether it is better than chance (0.5)."""
    if n < 1:
        raise ValueError("accuracy needs at least one pair")
    interval = stats.binomtest(correct, n).proportion_ci(confidence_level=ci, method="exact")
    return {"accuracy": correct / n, "n": n, "ci_low": float(interval.low), "ci_high": float(interval.high),
            "check": BETTER_THAN_CHANCE if interval.low > 0.5 else AT_CHANCE}
