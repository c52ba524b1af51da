"""Score tables as dense reward arrays, Pareto frontiers and exact dominated hypervolume (maximisation).

Intervals and comparisons live in ``mva_core.statistics`` and ``mva_core.comparisons``.
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


def hypervolumes(points: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    """Exact hypervolume of each set ``points[b]`` (shape (n_sets, n_points, k)) against one ``reference``.

    Vectorised for k = 2 (a point not dominating the reference is clipped to a zero-volume box), a loop of
    :func:`hypervolume` otherwise.
    """
    arr = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if arr.ndim != 3 or ref.shape != (arr.shape[2],):
        raise ValueError(f"points must be (sets, n, k) with a k-vector reference, got {arr.shape} and {ref.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("points contain non-finite entries")
    if arr.shape[2] != 2:
        return np.array([hypervolume(part, ref) for part in arr])
    boxes = np.clip(arr - ref, 0.0, None)
    order = np.argsort(-boxes[..., 0], axis=1, kind="stable")
    x = np.take_along_axis(boxes[..., 0], order, axis=1)
    running_max = np.maximum.accumulate(np.take_along_axis(boxes[..., 1], order, axis=1), axis=1)
    return np.sum(x * np.diff(running_max, axis=1, prepend=0.0), axis=1)


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
