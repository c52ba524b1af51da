"""Derived preferences: relabel a source's pairs by a rule instead of its annotators' labels.

``derive: shorter`` (conciseness, here) or ``derive: {scorer, margin, max_length_ratio}`` (an oracle; the scorers
live in ``mva_core.oracles``).
"""
from __future__ import annotations

import pandas as pd

from mva_core.oracles import OracleDerivation, derive_oracle_preference

DERIVATIONS = (None, "shorter")  # or an OracleDerivation ({scorer, margin} in the config)
SHORTER_MIN_RATIO = 1.25  # derive "shorter": keep pairs whose longer reply has >= 1.25x the words of the shorter


def derive_shorter_preference(pairs: pd.DataFrame, min_ratio: float = SHORTER_MIN_RATIO) -> tuple[pd.DataFrame, int]:
    """A conciseness value from any pairs: the shorter reply (in words) is chosen, whatever the original label.

    Pairs whose replies are of similar length (ratio below ``min_ratio``) carry no clear preference and are
    dropped; returns the derived pairs and how many were dropped. (Verbosity as a preference direction follows
    directional-preference work; no human labelled these pairs.)
    """
    words = pairs[["chosen", "rejected"]].map(lambda text: max(len(text.split()), 1))
    ratio = words.max(axis=1) / words.min(axis=1)
    kept = pairs[ratio >= min_ratio].copy()
    swap = words.loc[kept.index, "chosen"] > words.loc[kept.index, "rejected"]
    kept.loc[swap, ["chosen", "rejected"]] = kept.loc[swap, ["rejected", "chosen"]].to_numpy()
    return kept.reset_index(drop=True), int(len(pairs) - len(kept))


def derive_preference(pairs: pd.DataFrame, derive: str | OracleDerivation | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """``pairs`` relabelled by a source's ``derive`` setting, with the pairs dropped per reason (none without one)."""
    if derive == "shorter":
        kept, dropped = derive_shorter_preference(pairs)
        return kept, {"similar_length": dropped}
    if isinstance(derive, OracleDerivation):
        return derive_oracle_preference(pairs, derive)
    return pairs, {}
