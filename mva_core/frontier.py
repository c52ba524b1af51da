"""Pareto frontiers and exact dominated hypervolume (maximisation), and the hypervolume's reference point.

Score tables become arrays in ``mva_core.rewards``; intervals and verdicts live in ``mva_core.statistics``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mva_core.contracts import POINTS, validate_table
from mva_core.rewards import KEY, value_columns


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
            validate_table(points, POINTS.only(*KEY, "kind"))
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
