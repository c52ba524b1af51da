"""Splitting pairs by prompt into named fractions (train/eval...), deterministically and without leakage."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mva_core.data.errors import DataError
from mva_core.data.keys import conversation_key, digest, unit_interval


def split_bounds(fractions: Mapping[str, float]) -> list[tuple[str, float, float]]:
    """``(name, lower, upper)`` of each split's interval in [0, 1), in order; raises DataError on bad fractions."""
    if not fractions:
        raise DataError("split fractions are empty")
    bounds, lower = [], 0.0
    for name, fraction in fractions.items():
        if not fraction > 0:
            raise DataError(f"split fraction for {name!r} must be > 0, got {fraction!r}")
        bounds.append((name, lower, lower + fraction))
        lower += fraction
    if lower > 1 + 1e-9:
        raise DataError(f"split fractions sum to {lower:.6g} > 1: {dict(fractions)}")
    if lower > 1 - 1e-9:  # close the last interval so rounding leaves no gap below 1
        bounds[-1] = (bounds[-1][0], bounds[-1][1], 1.0)
    return bounds


def split_by_prompt(df: pd.DataFrame, fractions: Mapping[str, float], salt: str = "") -> dict[str, pd.DataFrame]:
    """Split rows by a hash of (salt + first user turn) into the named fractions, in order.

    A prompt, and every conversation opening with the same question, lands in exactly one split.

    Rows of each split are in a deterministic shuffled order (by a hash of salt + pair_id), so the first N rows
    are a deterministic random subset. A remainder (fractions summing below 1) is left out.
    """
    bounds = split_bounds(fractions)
    position = np.array([unit_interval(salt + conversation_key(messages)) for messages in df["prompt"]], dtype=float)
    shuffled = df.assign(_order=[digest(salt, pair_id) for pair_id in df["pair_id"]])
    splits = {}
    for name, lower, upper in bounds:
        part = shuffled[(position >= lower) & (position < upper)].sort_values(["_order", "pair_id"], kind="stable")
        part = part.drop(columns="_order").reset_index(drop=True)
        part.attrs = {}
        splits[name] = part
    return splits
