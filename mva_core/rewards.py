"""Long score tables as dense reward arrays, and mean-reward tables in the wide layout figures use.

``reward_tensor`` pivots one training seed's scores into ``rewards[point, value, prompt]``; ``seeded_rewards`` stacks
the seeds into ``rewards[seed, point, value, prompt]``. Points are sorted by (method, point_id), values and prompts
by name, so every consumer indexes the same way. Where a prompt was answered several times (a ``sample`` column:
``evaluation.generation.samples_per_prompt``), its entry is the mean of its samples' rewards, so the prompt stays
the unit every statistic resamples.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mva_core.contracts import MEAN_REWARDS, POINTS, SCORES, lam_columns, validate_table

KEY = ["method", "point_id"]
CI_SUFFIXES = ("_ci_low", "_ci_high")


@dataclass(frozen=True)
class RewardTensor:
    """Long scores as a dense array ``rewards[point, value, prompt]``; points sorted by (method, point_id)."""

    keys: pd.MultiIndex
    values: tuple[str, ...]
    prompts: tuple[str, ...]
    rewards: np.ndarray

    def row(self, method: str, point_id: str) -> int:
        """Row index of a (method, point_id) key."""
        try:
            return self.keys.get_loc((method, point_id))
        except KeyError:
            raise KeyError(f"no scores for method={method!r} point_id={point_id!r}") from None

    def means(self) -> np.ndarray:
        """Mean reward over prompts, shape (points, values)."""
        return self.rewards.mean(axis=-1)


def reward_tensor(scores: pd.DataFrame) -> RewardTensor:
    """Pivot the long score table; every (method, point_id) must be scored on every (value, prompt) exactly once."""
    validate_table(scores, SCORES.only("method", "point_id", "prompt_id", "value", "reward"))
    if scores.empty:
        raise ValueError("scores table is empty")
    bad = ~np.isfinite(scores["reward"].to_numpy(dtype=float))
    if bad.any():
        raise ValueError(f"non-finite reward in scores row {scores[bad].iloc[0].to_dict()}")
    cols = ["method", "point_id", "value", "prompt_id"]
    dup = scores.duplicated(cols + (["sample"] if "sample" in scores.columns else []))
    if dup.any():
        raise ValueError(f"duplicate score for {scores.loc[dup, cols].iloc[0].to_dict()}")
    if "sample" in scores.columns:
        scores = mean_over_samples(scores)
    keys = pd.MultiIndex.from_frame(scores[KEY].drop_duplicates().astype(str)).sort_values()
    values = tuple(sorted(scores["value"].astype(str).unique()))
    prompts = tuple(sorted(scores["prompt_id"].astype(str).unique()))
    rewards = np.full((len(keys), len(values), len(prompts)), np.nan)
    k = keys.get_indexer(pd.MultiIndex.from_frame(scores[KEY].astype(str)))
    v = pd.Index(values).get_indexer(scores["value"].astype(str))
    p = pd.Index(prompts).get_indexer(scores["prompt_id"].astype(str))
    rewards[k, v, p] = scores["reward"].to_numpy(dtype=float)
    if np.isnan(rewards).any():
        ki, vi, pi = np.argwhere(np.isnan(rewards))[0]
        raise ValueError(
            f"scores incomplete: {np.isnan(rewards).sum()} missing, e.g. method={keys[ki][0]!r} "
            f"point_id={keys[ki][1]!r} value={values[vi]!r} prompt_id={prompts[pi]!r}"
        )
    return RewardTensor(keys, values, prompts, rewards)


def mean_over_samples(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, point_id, value, prompt_id) with the mean ``reward`` of its samples; ValueError unless
    every prompt has the same number of samples (a missing sample would weight its prompt differently)."""
    cols = ["method", "point_id", "value", "prompt_id"]
    grouped = scores.groupby(cols, sort=False, dropna=False)["reward"]
    counts = grouped.size()
    if counts.nunique() > 1:
        fewest = counts.idxmin()
        raise ValueError(f"scores incomplete: {dict(zip(cols, fewest))} has {counts.min()} samples, others up to "
                         f"{counts.max()}")
    return grouped.mean().reset_index()


@dataclass(frozen=True)
class SeededRewards:
    """Scores as ``rewards[seed, point, value, prompt]``; points sorted by (method, point_id)."""

    seeds: tuple[str, ...]
    keys: pd.MultiIndex
    values: tuple[str, ...]
    prompts: tuple[str, ...]
    rewards: np.ndarray

    def prompt_subset(self, prompt_ids: Sequence[str]) -> SeededRewards:
        """The same rewards restricted to ``prompt_ids`` (in that order)."""
        index = pd.Index(self.prompts).get_indexer(list(prompt_ids))
        if (index < 0).any():
            missing = [p for p, i in zip(prompt_ids, index) if i < 0]
            raise ValueError(f"{len(missing)} prompts have no scores, e.g. prompt_id={missing[0]!r}")
        return SeededRewards(self.seeds, self.keys, self.values, tuple(prompt_ids), self.rewards[..., index])

    def method_rows(self, method: str) -> np.ndarray:
        return np.flatnonzero(self.keys.get_level_values("method") == method)


def seeded_rewards(scores: pd.DataFrame) -> SeededRewards:
    """Pivot a long score table (a ``seed`` column is optional) into :class:`SeededRewards`.

    Every training seed must score the same points on the same prompts.
    """
    if "seed" not in scores.columns:
        scores = scores.assign(seed=0)
    tensors = {str(seed): reward_tensor(part) for seed, part in scores.groupby("seed", sort=True)}
    first_seed, first = next(iter(tensors.items()))
    for seed, tensor in tensors.items():
        if not (tensor.keys.equals(first.keys) and tensor.prompts == first.prompts and tensor.values == first.values):
            raise ValueError(f"training seed {seed} scores other points, prompts or values than seed {first_seed}")
    return SeededRewards(tuple(tensors), first.keys, first.values, first.prompts,
                         np.stack([t.rewards for t in tensors.values()]))


def wide_means(means: pd.DataFrame, with_ci: bool = False) -> pd.DataFrame:
    """Index (method, point_id), one mean column per value; ``with_ci`` adds ``<value>_ci_low/_ci_high``."""
    validate_table(means, MEAN_REWARDS.only(*KEY, "value", "mean", *(["ci_low", "ci_high"] if with_ci else [])))
    wide = means.pivot(index=KEY, columns="value", values="mean")
    if with_ci:
        for bound in ("ci_low", "ci_high"):
            part = means.pivot(index=KEY, columns="value", values=bound)
            wide = wide.join(part.add_suffix(f"_{bound}"))
    wide.columns.name = None
    return wide


def value_columns(wide: pd.DataFrame) -> list[str]:
    """The value (mean) columns of a wide table, i.e. all but the CI columns."""
    return [c for c in wide.columns if not str(c).endswith(CI_SUFFIXES)]


def attach_points(wide: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """``wide`` as columns (method, point_id, values...) joined with each point's kind and ``lam_*`` columns."""
    validate_table(points, POINTS.only(*KEY, "kind"))
    info = points[KEY + ["kind"] + lam_columns(points)].astype({"method": str, "point_id": str})
    table = wide.reset_index().merge(info, on=KEY, how="left", validate="one_to_one")
    if table["kind"].isna().any():
        raise ValueError(f"point {table.loc[table['kind'].isna(), KEY].iloc[0].to_dict()} is missing from points")
    return table
