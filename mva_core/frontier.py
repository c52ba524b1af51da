"""Pareto frontiers and exact dominated hypervolume (maximisation), and the hypervolume's reference point.

Score tables become arrays in ``mva_core.rewards``; intervals and verdicts live in ``mva_core.statistics``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def hypervolumes(points: np.ndarray, reference: np.ndarray | Sequence[float]) -> np.ndarray:
    """Exact hypervolume of each set ``points[b]`` (shape (n_sets, n_points, k)) against ``reference``: one k-vector
    for every set, or one per set (shape (n_sets, k), e.g. a reference recomputed in each resample).

    Vectorised for k = 2 (a point not dominating the reference is clipped to a zero-volume box), a loop of
    :func:`hypervolume` otherwise.
    """
    arr = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if arr.ndim != 3 or ref.shape not in ((arr.shape[2],), (arr.shape[0], arr.shape[2])):
        raise ValueError(f"points must be (sets, n, k) with a k-vector or (sets, k) reference, got {arr.shape} and "
                         f"{ref.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("points contain non-finite entries")
    ref = np.broadcast_to(ref, (arr.shape[0], arr.shape[2]))
    if arr.shape[2] != 2:
        return np.array([hypervolume(part, r) for part, r in zip(arr, ref)])
    boxes = np.clip(arr - ref[:, None, :], 0.0, None)
    order = np.argsort(-boxes[..., 0], axis=1, kind="stable")
    x = np.take_along_axis(boxes[..., 0], order, axis=1)
    running_max = np.maximum.accumulate(np.take_along_axis(boxes[..., 1], order, axis=1), axis=1)
    return np.sum(x * np.diff(running_max, axis=1, prepend=0.0), axis=1)


def reference_from_means(means: np.ndarray, how: str, is_sft: np.ndarray, margin: float = 0.01) -> np.ndarray:
    """The reference point computed from mean rewards ``means[..., point, value]`` (leading axes, e.g. resamples,
    are kept): ``"sft"``, the mean of the points where ``is_sft`` (usually one model scored once per method);
    ``"min"``, the per-value minimum over all points minus ``margin`` × the per-value range (× 1 if the range is 0).
    """
    arr = np.asarray(means, dtype=float)
    if how == "sft":
        if not np.any(is_sft):
            raise ValueError("reference 'sft': no scored point has kind == 'sft'")
        return arr[..., np.asarray(is_sft, dtype=bool), :].mean(axis=-2)
    if how == "min":
        low, span = arr.min(axis=-2), np.ptp(arr, axis=-2)
        return low - margin * np.where(span > 0, span, 1.0)
    raise ValueError(f"reference must be 'sft', 'min' or one number per value, got {how!r}")
