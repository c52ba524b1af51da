"""λ points that are the same model in several methods, generated once per training seed.

Methods that differ only in a later value's vector share the earlier vectors, so the SFT point and the points that
switch on only shared vectors (``concise`` alone at 1 and 2 in config/decorrelation.yaml, 3 of 12 points of 8 of its
9 methods) load the same weights in every method. A point's model is the set of (adapter directory, λ) pairs with
λ ≠ 0 (``Method.adapters`` and ``Method.mixer_lambdas``); the first method in config order with that model generates
it, and later methods copy its rows (rule ``merge_generations``). Row seeds do not depend on the method
(``sampling.row_seed``), so a copied row is the row the later method would have drawn, sampling included.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from mva_core.grid import GridSettings
from mva_core.methods import method_for, value_order
from mva_core.workload import BUILT_GRID_LIMIT

ModelKey = tuple[tuple[str, float], ...]


def model_keys(adapters: Mapping[str, str], lambdas: pd.DataFrame) -> dict[str, ModelKey]:
    """Point id -> the model it loads: sorted (adapter directory, λ) of its adapters with λ ≠ 0 (``lambdas``: a
    ``mixer_lambdas`` table with ``point_id`` and ``lam_<adapter>`` columns)."""
    keys = {}
    for row in lambdas.to_dict("records"):
        pairs = [(adapters[name.removeprefix("lam_")], round(float(lam), 12)) for name, lam in row.items()
                 if name.startswith("lam_") and float(lam) != 0.0]
        keys[str(row["point_id"])] = tuple(sorted(pairs))
    return keys


def borrowed_points(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Method -> {point id: the earlier method whose generations of that point it copies}, for a validated config.

    A point is copied only under the same point id (row seeds depend on it). With a grid too large to build at plan
    time (``workload.BUILT_GRID_LIMIT``) nothing is shared."""
    grid = GridSettings.of(config["evaluation"]["grid"])
    borrowed: dict[str, dict[str, str]] = {name: {} for name in config["methods"]}
    if grid.size(len(value_order(config))) > BUILT_GRID_LIMIT:
        return borrowed
    owners: dict[ModelKey, tuple[str, str]] = {}
    for name in config["methods"]:
        method = method_for(name, config)
        lambdas = method.mixer_lambdas(method.points(grid, seed=config["seed"]))
        for point_id, key in model_keys(method.adapters(), lambdas).items():
            owner, owner_point = owners.setdefault(key, (name, point_id))
            if owner != name and owner_point == point_id:
                borrowed[name][point_id] = owner
    return borrowed


def shared_generations(borrowed: Mapping[str, Mapping[str, str]]) -> int:
    """How many (method, point) generations per prompt the sharing saves."""
    return sum(len(points) for points in borrowed.values())


def copied_rows(owner_generations: Mapping[str, pd.DataFrame], borrowed: Mapping[str, str], method: str) -> pd.DataFrame:
    """The rows ``method`` copies: each borrowed point's rows from its owner's generations (``owner_generations``:
    owner method -> its generations table), relabelled as ``method``'s. ValueError names an owner that lacks one."""
    frames = []
    for owner in sorted(set(borrowed.values())):
        if owner not in owner_generations:
            raise ValueError(f"{method} copies points of {owner}, but no generations of {owner} were given")
        points = [p for p, o in borrowed.items() if o == owner]
        table = owner_generations[owner]
        rows = table[table["point_id"].astype(str).isin(points)]
        missing = sorted(set(points) - set(rows["point_id"].astype(str)))
        if missing:
            raise ValueError(f"generations of {owner} lack the points {missing} that {method} copies from them")
        frames.append(rows.assign(method=method))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
