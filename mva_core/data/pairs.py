"""Loading the preference pairs of one source: parse, clean (drop empty, identical and duplicate pairs, counted per
reason), derive a preference if the source asks for one, and give each pair a stable id."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mva_core.contracts import PAIRS
from mva_core.data.derived import derive_preference
from mva_core.data.errors import RowDropped
from mva_core.data.formats import Pair, PairParser, pair_parser
from mva_core.data.keys import digest, prompt_text
from mva_core.data.records import collect_rows
from mva_core.data.sources import SourceSpec, as_spec

DROP_REASONS = ("malformed", "prompt_mismatch", "empty", "identical", "duplicate", "similar_length", "oracle_margin",
                "length_confound")


def _checked_pair(parse: PairParser) -> PairParser:
    def checked(row: Mapping[str, Any]) -> Pair:
        pair = parse(row)
        if not pair.prompt or not pair.prompt[-1]["content"] or not pair.chosen or not pair.rejected:
            raise RowDropped("empty")
        if pair.chosen == pair.rejected:
            raise RowDropped("identical")
        return pair

    return checked


def _pair_key(pair: Pair) -> tuple[str, str, str]:
    return prompt_text(pair.prompt), pair.chosen, pair.rejected


def load_pairs(source: SourceSpec | str, roots: Sequence[str | Path] = (), on_bad_row: str = "error") -> pd.DataFrame:
    """Preference pairs of one source as a frame with the columns of ``contracts.PAIRS``.

    ``attrs["drops"]`` counts dropped rows per reason (``DROP_REASONS``) and ``attrs["rows_read"]`` the rows read.
    With ``on_bad_row="error"`` a malformed row raises DataError; with ``"skip"`` it is counted as ``malformed``.
    """
    spec = as_spec(source)
    pairs, drops, rows_read = collect_rows(
        spec, roots, on_bad_row, DROP_REASONS,
        lambda first, where, pos: _checked_pair(pair_parser(spec.format, spec.view, first, where, pos)), _pair_key,
    )
    label = spec.label
    rows = [(digest(label, *_pair_key(p)), p.prompt, p.chosen, p.rejected, label) for p in pairs]
    df, derived_drops = derive_preference(pd.DataFrame(rows, columns=PAIRS.column_names), spec.derive)
    drops.update(derived_drops)
    df.attrs.update(drops=drops, rows_read=rows_read)
    return df
