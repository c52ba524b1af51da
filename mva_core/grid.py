"""λ grids: which combinations base + Σ_v λ_v ΔW_v are evaluated, and the held-out evaluation prompts.

Every method's grid always contains the SFT model (all λ = 0, kind ``sft``) and each single value vector
(a unit vector, kind ``single``), so frontiers always have their reference and end points.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mva_core.data import prompt_id

KIND_PRIORITY = {"sft": 0, "single": 1, "grid": 2}


@dataclass(frozen=True)
class GridSettings:
    """Grid of λ vectors (see ``evaluation.grid`` in the schema)."""

    type: str = "product"
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0)
    points: tuple[tuple[float, ...], ...] = field(default_factory=tuple)
    n_points: int = 10
    low: float = 0.0
    high: float = 1.0


def point_id(lambdas: Sequence[float]) -> str:
    """Readable stable id of a λ vector, e.g. ``0.5_1`` or ``-0.5_1.5``."""
    return "_".join(f"{float(x):g}" for x in lambdas)


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


def grid_points(settings: GridSettings, values: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Points to evaluate: columns ``point_id``, ``kind`` and one ``lam_<value>`` per value (training order)."""
    k = len(values)
    candidates = [(tuple([0.0] * k), "sft")]
    candidates += [(tuple(float(i == j) for j in range(k)), "single") for i in range(k)]
    candidates += [(tuple(float(x) for x in vec), "grid") for vec in _grid_vectors(settings, k, seed)]
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


def evaluation_prompts(eval_splits: Mapping[str, pd.DataFrame], per_value: int) -> pd.DataFrame:
    """The first ``per_value`` distinct prompts of each value's eval split (its order is a seeded shuffle).

    Every model answers every prompt and every reward model scores every answer. Columns: ``prompt_id``,
    ``prompt`` (messages), ``origin`` (the value whose eval split it came from).
    """
    rows, seen = [], set()
    for value, split in eval_splits.items():
        taken = 0
        for messages in split["prompt"]:
            if taken == per_value:
                break
            pid = prompt_id(messages)
            if pid in seen:
                continue
            seen.add(pid)
            rows.append({"prompt_id": pid, "prompt": list(messages), "origin": value})
            taken += 1
        if taken < per_value:
            raise ValueError(
                f"value {value!r}: its eval split has only {taken} distinct prompts but evaluation.prompts_per_value "
                f"is {per_value}; lower it or raise data.max_pairs.eval / data.split.eval"
            )
    return pd.DataFrame(rows)

