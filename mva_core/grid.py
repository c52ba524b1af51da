"""λ grids: which combinations base + Σ_v λ_v ΔW_v are evaluated.

Every method's grid always contains the SFT model (all λ = 0, kind ``sft``) and each single value vector
(a unit vector, kind ``single``), so frontiers always have their reference and end points.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

KIND_PRIORITY = {"sft": 0, "single": 1, "grid": 2, "line": 2, "expo": 2, "modpo": 2}


@dataclass(frozen=True)
class GridSettings:
    """Grid of λ vectors (see ``evaluation.grid`` in the schema)."""

    type: str = "product"
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0)
    points: tuple[tuple[float, ...], ...] = field(default_factory=tuple)
    n_points: int = 10
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> GridSettings:
        """The settings of an ``evaluation.grid`` config section (lists become tuples)."""
        return cls(**{**section, "lambdas": tuple(section["lambdas"]), "points": tuple(map(tuple, section["points"]))})

    def size(self, k: int) -> int:
        """λ vectors of the grid itself for ``k`` values (before the SFT and single-vector references are added)."""
        if self.type == "product":
            return len(self.lambdas) ** k
        return len(self.points) if self.type == "list" else self.n_points


def point_id(lambdas: Sequence[float]) -> str:
    """Readable stable id of a λ vector, e.g. ``0.5_1`` or ``-0.5_1.5``."""
    return "_".join(f"{float(x) + 0.0:g}" for x in lambdas)  # + 0.0: -0.0 reads 0


def _grid_vectors(settings: GridSettings, k: int, seed: int) -> list[tuple[float, ...]]:
    if settings.type == "product":
        return [tuple(p) for p in itertools.product(settings.lambdas, repeat=k)]
    if settings.type == "list":
        return [tuple(p) for p in settings.points]
    rng = np.random.default_rng(seed)
    if settings.type == "simplex":
        return [tuple(np.round(p, 4)) for p in rng.dirichlet(np.ones(k), size=settings.n_points)]
    if settings.type == "box":
        return [tuple(np.round(p, 4)) for p in rng.uniform(settings.low, settings.high, size=(settings.n_points, k))]
    raise ValueError(f"evaluation.grid.type {settings.type!r} is not one of product, list, simplex, box")


def _table(candidates: Sequence[tuple[tuple[float, ...], str]], values: Sequence[str]) -> pd.DataFrame:
    """Points from (λ vector, kind) candidates: one row per distinct λ, the reference kinds winning ties."""
    best: dict[str, tuple[tuple[float, ...], str]] = {}
    for vec, kind in candidates:
        pid = point_id(vec)
        if pid not in best or KIND_PRIORITY[kind] < KIND_PRIORITY[best[pid][1]]:
            best[pid] = (vec, kind)
    rows = [{"point_id": pid, "kind": kind, **{f"lam_{v}": lam for v, lam in zip(values, vec)}}
            for pid, (vec, kind) in best.items()]
    table = pd.DataFrame(rows)
    table["_rank"] = table["kind"].map(KIND_PRIORITY)
    return table.sort_values(["_rank", "point_id"], ignore_index=True).drop(columns="_rank")


def _references(k: int) -> list[tuple[tuple[float, ...], str]]:
    return [(tuple([0.0] * k), "sft")] + [(tuple(float(i == j) for j in range(k)), "single") for i in range(k)]


def grid_points(settings: GridSettings, values: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Points to evaluate: columns ``point_id``, ``kind`` and one ``lam_<value>`` per value (training order)."""
    k = len(values)
    grid = [(tuple(float(x) for x in vec), "grid") for vec in _grid_vectors(settings, k, seed)]
    return _table(_references(k) + grid, values)


def line_points(lambdas: Sequence[float], values: Sequence[str], diagonal: bool, kind: str) -> pd.DataFrame:
    """Each value vector alone along its own λ line (and, with ``diagonal``, all of them together)."""
    k = len(values)
    candidates = [(tuple(lam * float(i == j) for j in range(k)), kind) for i in range(k) for lam in lambdas]
    if diagonal:
        candidates += [(tuple([float(lam)] * k), kind) for lam in lambdas]
    return _table(_references(k) + candidates, values)


def modpo_points(weightings: Sequence[Sequence[float]], values: Sequence[str]) -> pd.DataFrame:
    """One point per weighting (λ columns hold the weighting), served by MODPO adapter ``w<index>``; plus SFT."""
    table = _table([(tuple([0.0] * len(values)), "sft")], values).assign(adapter="")
    rows = [{"point_id": f"modpo_w{i}", "kind": "modpo", **{f"lam_{v}": float(w) for v, w in zip(values, weighting)},
             "adapter": f"w{i}"} for i, weighting in enumerate(weightings)]
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
