"""Mean rewards with bootstrap CIs, Pareto frontiers and dominated hypervolume (maximisation).

Bootstrap resamples are drawn over prompts once per call and shared by every (method, point) so that CIs of
different points and methods are paired: a resample that happens to pick easy prompts lifts all of them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

KEY = ["method", "point_id"]
SCORE_COLUMNS = ["method", "point_id", "prompt_id", "value", "reward"]
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

    def boot_means(self, counts: np.ndarray) -> np.ndarray:
        """Bootstrap means for resample counts of shape (n_boot, prompts); shape (points, values, n_boot)."""
        flat = self.rewards.reshape(-1, self.rewards.shape[-1]) @ counts.T  # 2-D matmul: ~100x faster than batched
        return flat.reshape(*self.rewards.shape[:-1], len(counts)) / counts.shape[1]


def check_columns(df: pd.DataFrame, required: Sequence[str], name: str) -> None:
    """Raise naming the ``name`` table and its missing columns."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name} table lacks columns {missing}; has {list(df.columns)}")


def reward_tensor(scores: pd.DataFrame) -> RewardTensor:
    """Pivot the long score table; every (method, point_id) must be scored on every (value, prompt) exactly once."""
    check_columns(scores, SCORE_COLUMNS, "scores")
    if scores.empty:
        raise ValueError("scores table is empty")
    bad = ~np.isfinite(scores["reward"].to_numpy(dtype=float))
    if bad.any():
        raise ValueError(f"non-finite reward in scores row {scores[bad].iloc[0].to_dict()}")
    cols = ["method", "point_id", "value", "prompt_id"]
    dup = scores.duplicated(cols)
    if dup.any():
        raise ValueError(f"duplicate score for {scores.loc[dup, cols].iloc[0].to_dict()}")
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


def bootstrap_counts(n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each prompt is drawn in each resample, shape (n_boot, n_prompts), float."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    idx = np.random.default_rng(seed).integers(0, n_prompts, size=(n_boot, n_prompts))
    flat = (idx + n_prompts * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_prompts).reshape(n_boot, n_prompts).astype(float)


def percentile_ci(boot: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    low, high = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2], axis=-1)
    return low, high


def mean_rewards(scores: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per (method, point_id, value): mean reward and paired percentile-bootstrap CI over prompts."""
    tensor = reward_tensor(scores)
    low, high = percentile_ci(tensor.boot_means(bootstrap_counts(len(tensor.prompts), n_boot, seed)), ci)
    n_points, n_values = len(tensor.keys), len(tensor.values)
    return pd.DataFrame(
        {
            "method": np.repeat(tensor.keys.get_level_values("method"), n_values),
            "point_id": np.repeat(tensor.keys.get_level_values("point_id"), n_values),
            "value": np.tile(tensor.values, n_points),
            "mean": tensor.means().ravel(),
            "ci_low": low.ravel(),
            "ci_high": high.ravel(),
            "n_prompts": len(tensor.prompts),
        }
    )


def wide_means(means: pd.DataFrame, with_ci: bool = False) -> pd.DataFrame:
    """Index (method, point_id), one mean column per value; ``with_ci`` adds ``<value>_ci_low/_ci_high``."""
    check_columns(means, KEY + ["value", "mean"] + (["ci_low", "ci_high"] if with_ci else []), "means")
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


def lam_columns(points: pd.DataFrame) -> list[str]:
    """The ``lam_<value>`` columns of a points table."""
    return [c for c in points.columns if str(c).startswith("lam_")]


def attach_points(wide: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """``wide`` as columns (method, point_id, values...) joined with each point's kind and ``lam_*`` columns."""
    check_columns(points, KEY + ["kind"], "points")
    info = points[KEY + ["kind"] + lam_columns(points)].astype({"method": str, "point_id": str})
    table = wide.reset_index().merge(info, on=KEY, how="left", validate="one_to_one")
    if table["kind"].isna().any():
        raise ValueError(f"point {table.loc[table['kind'].isna(), KEY].iloc[0].to_dict()} is missing from points")
    return table


def _as_matrix(points: np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D (n, k) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"points contain non-finite entries at rows {np.unique(np.argwhere(~np.isfinite(arr))[:, 0])}")
    return arr


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for non-dominated rows (maximisation); exact duplicates of a non-dominated point are all kept."""
    arr = _as_matrix(points)
    alive = np.ones(len(arr), dtype=bool)
    # Each point still alive when reached removes the points it dominates. Non-dominated points are never
    # removed and every dominated point is dominated by one of them, so the result is exact in any order;
    # descending coordinate sum (dominators first) keeps the number of comparisons near the frontier size.
    for i in np.argsort(-arr.sum(axis=1), kind="stable"):
        if alive[i]:
            alive &= ~((arr <= arr[i]).all(axis=1) & (arr < arr[i]).any(axis=1))
    return alive


def _hv_positive(arr: np.ndarray) -> float:
    """Hypervolume of the union of boxes [0, p] for points with all coordinates > 0."""
    if len(arr) == 0:
        return 0.0
    if arr.shape[1] == 1:
        return float(arr[:, 0].max())
    if arr.shape[1] == 2:
        order = np.argsort(-arr[:, 0], kind="stable")
        x, running_max = arr[order, 0], np.maximum.accumulate(arr[order, 1])
        return float(np.sum(x * np.diff(running_max, prepend=0.0)))
    levels = np.unique(arr[:, -1])[::-1]  # slice along the last axis, highest level first
    lower = np.append(levels[1:], 0.0)
    return float(sum((z - z_next) * _hv_positive(arr[arr[:, -1] >= z, :-1]) for z, z_next in zip(levels, lower)))


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Exact volume dominated by ``points`` and dominating ``reference`` (maximisation, any dimension)."""
    arr = _as_matrix(points)
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (arr.shape[1],):
        raise ValueError(f"reference has shape {ref.shape}, points have {arr.shape[1]} coordinates")
    shifted = arr - ref
    shifted = shifted[(shifted > 0).all(axis=1)]
    if len(shifted) == 0:
        return 0.0
    return _hv_positive(np.unique(shifted[pareto_mask(shifted)], axis=0))


def reference_point(
    wide: pd.DataFrame,
    how: str | Sequence[float],
    points: pd.DataFrame | None = None,
    margin: float = 0.01,
) -> np.ndarray:
    """Reference point in the order of ``value_columns(wide)``.

    ``"sft"``: mean of the rows whose ``kind`` is ``"sft"`` in ``points`` (usually one model scored once or
    several times); ``"min"``: per-value minimum over all rows minus ``margin`` × the per-value range (× 1 if
    the range is 0); a sequence: used as given.
    """
    values = value_columns(wide)
    if isinstance(how, str):
        if how == "sft":
            if points is None:
                raise ValueError("reference 'sft' needs the points table")
            check_columns(points, KEY + ["kind"], "points")
            sft = points.loc[points["kind"] == "sft", KEY].astype(str)
            rows = wide.index.intersection(pd.MultiIndex.from_frame(sft))
            if len(rows) == 0:
                raise ValueError("reference 'sft': no scored point has kind == 'sft'")
            return wide.loc[rows, values].to_numpy(dtype=float).mean(axis=0)
        if how == "min":
            table = wide[values].to_numpy(dtype=float)
            low, span = table.min(axis=0), np.ptp(table, axis=0)
            return low - margin * np.where(span > 0, span, 1.0)
        raise ValueError(f"reference must be 'sft', 'min' or a list of {len(values)} floats, got {how!r}")
    ref = np.asarray(how, dtype=float)
    if ref.shape != (len(values),):
        raise ValueError(f"explicit reference {list(how)} has {ref.size} entries, expected one per value {values}")
    return ref


def _check_points_cover(keys: pd.MultiIndex, points: pd.DataFrame) -> None:
    check_columns(points, KEY + ["kind"], "points")
    missing = keys.difference(pd.MultiIndex.from_frame(points[KEY].astype(str)))
    if len(missing):
        raise ValueError(f"{len(missing)} scored points are missing from the points table, e.g. {missing[0]}")


def frontier_table(
    scores: pd.DataFrame,
    points: pd.DataFrame,
    reference: str | Sequence[float] = "sft",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per method: its Pareto-optimal point ids, hypervolume and a bootstrap CI of the hypervolume.

    The reference point is fixed from the full-sample means; each resample recomputes every point's means,
    each method's frontier and hypervolume, with the same prompt resample for every method.
    """
    tensor = reward_tensor(scores)
    _check_points_cover(tensor.keys, points)
    means = tensor.means()
    wide = pd.DataFrame(means, index=tensor.keys, columns=list(tensor.values))
    ref = reference_point(wide, reference, points)
    boot = tensor.boot_means(bootstrap_counts(len(tensor.prompts), n_boot, seed))
    methods = tensor.keys.get_level_values("method")
    rows = []
    for method in methods.unique():
        sel = np.flatnonzero(methods == method)
        front = sel[pareto_mask(means[sel])]
        front = front[np.argsort(means[front, 0], kind="stable")]
        boot_hv = np.array([hypervolume(boot[sel, :, b], ref) for b in range(n_boot)])
        low, high = percentile_ci(boot_hv, ci)
        rows.append(
            {
                "method": method,
                "n_points": len(sel),
                "n_frontier": len(front),
                "frontier_ids": [tensor.keys[i][1] for i in front],
                "hypervolume": hypervolume(means[sel], ref),
                "hv_ci_low": float(low),
                "hv_ci_high": float(high),
                **{f"ref_{v}": float(r) for v, r in zip(tensor.values, ref)},
            }
        )
    return pd.DataFrame(rows)


def frontier_ids(table: pd.DataFrame) -> dict[str, list[str]]:
    """``{method: frontier point ids}`` from a :func:`frontier_table`."""
    return {row.method: list(row.frontier_ids) for row in table.itertuples()}


def _cell(x: object, floatfmt: str) -> str:
    if isinstance(x, (float, np.floating)):
        text = format(x, floatfmt)
    elif isinstance(x, (list, tuple, np.ndarray)):
        text = ", ".join(str(i) for i in x)
    else:
        text = str(x)
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """GitHub pipe table of ``df`` (a non-default index is written as leading columns)."""
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    header = [str(c) for c in df.columns]
    body = [[_cell(x, floatfmt) for x in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"
