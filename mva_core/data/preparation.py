"""Preparing one value's data: load all its sources, drop cross-source duplicates, split by prompt, cap each split,
and account for every row in a summary table."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mva_core.contracts import DATA_SUMMARY
from mva_core.data.errors import DataError
from mva_core.data.keys import prompt_text
from mva_core.data.pairs import load_pairs
from mva_core.data.sources import SourceSpec
from mva_core.data.splits import split_bounds, split_by_prompt

SummaryEntries = dict[str, list[tuple[str, str, int]]]
"""Source label -> its (stage, reason, rows) entries."""


@dataclass
class PreparedValueData:
    """Train/eval splits of one value and a long summary table (``contracts.DATA_SUMMARY``)."""

    splits: dict[str, pd.DataFrame]
    summary: pd.DataFrame


def _check_caps(value: str, fractions: Mapping[str, float], max_pairs: Mapping[str, int | None]) -> None:
    for name, cap in max_pairs.items():
        if name not in fractions:
            raise DataError(f"value {value!r}: max_pairs names split {name!r}, which is not in the fractions "
                            f"({', '.join(fractions)})")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise DataError(f"value {value!r}: max_pairs[{name!r}] must be a positive integer or None, got {cap!r}")


def prepare_value_data(value: str, sources: Sequence[SourceSpec], fractions: Mapping[str, float],
                       max_pairs: Mapping[str, int | None], roots: Sequence[str | Path], on_bad_row: str = "error",
                       salt: str = "") -> PreparedValueData:
    """Load all sources of ``value``, drop cross-source duplicates, split by prompt and cap each split.

    Summary stages per source: ``read`` (reason ""), ``dropped`` (reason: a load drop reason,
    ``cross_source_duplicate``, ``unassigned`` (prompt fell in the unused fraction) or ``over_cap:<split>``), ``kept``
    (reason: split name). Raises DataError if a split ends up empty.
    """
    if not sources:
        raise DataError(f"value {value!r}: no data sources")
    labels = [spec.label for spec in sources]
    if len(set(labels)) != len(labels):
        raise DataError(f"value {value!r}: a source is listed twice: {labels}")
    _check_caps(value, fractions, max_pairs)
    split_bounds(fractions)
    frames = [load_pairs(spec, roots, on_bad_row) for spec in sources]
    summary = {label: [("read", "", df.attrs["rows_read"])] + [("dropped", r, n) for r, n in df.attrs["drops"].items()]
               for label, df in zip(labels, frames, strict=True)}
    pairs = _drop_cross_source_duplicates(pd.concat(frames, ignore_index=True), summary)
    splits = split_by_prompt(pairs, fractions, salt)
    assigned = pd.concat([part["pair_id"] for part in splits.values()])
    _count_dropped(summary, pairs.loc[~pairs["pair_id"].isin(assigned), "source"], "unassigned")
    for name, part in splits.items():
        cap = max_pairs.get(name)
        if cap is not None:
            _count_dropped(summary, part["source"].iloc[cap:], f"over_cap:{name}")
            splits[name] = part.iloc[:cap].reset_index(drop=True)
    for name, part in splits.items():
        if part.empty:
            raise DataError(f"value {value!r}: split {name!r} is empty ({len(pairs)} pairs after cleaning, "
                            f"fractions {dict(fractions)}); add data for this value or change the split fractions")
        for label in labels:
            summary[label].append(("kept", name, int((part["source"] == label).sum())))
    return PreparedValueData(splits, _summary_frame(value, summary))


def _drop_cross_source_duplicates(pairs: pd.DataFrame, summary: SummaryEntries) -> pd.DataFrame:
    """Keep the first of pairs with the same prompt, chosen and rejected text (sources in the given order)."""
    keys = pd.Series(list(zip(map(prompt_text, pairs["prompt"]), pairs["chosen"], pairs["rejected"], strict=True)),
                     dtype=object)
    duplicated = keys.duplicated().to_numpy()
    _count_dropped(summary, pairs["source"][duplicated], "cross_source_duplicate")
    kept = pairs[~duplicated].reset_index(drop=True)
    kept.attrs = {}
    return kept


def _count_dropped(summary: SummaryEntries, sources: pd.Series, reason: str) -> None:
    for label, rows in sources.value_counts().items():
        summary[label].append(("dropped", reason, int(rows)))


def _summary_frame(value: str, summary: SummaryEntries) -> pd.DataFrame:
    rows = [(value, label, stage, reason, rows) for label, entries in summary.items()
            for stage, reason, rows in entries if stage != "dropped" or rows > 0]
    return pd.DataFrame(rows, columns=DATA_SUMMARY.column_names).astype({"rows": "int64"})
