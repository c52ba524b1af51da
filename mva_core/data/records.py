"""Parsing every record of a source, shared by pairs and prompts: malformed rows raise or are counted, dropped rows
and duplicates are counted per reason."""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from mva_core.data.errors import DataError, RowDropped, RowError
from mva_core.data.sources import SourceSpec, open_source

ON_BAD_ROW = ("error", "skip")

ParserChooser = Callable[[Mapping[str, Any], str, str], Callable[[Mapping[str, Any]], Any]]
"""(first row, where, position) -> the parser of every row of the source."""


def collect_rows(spec: SourceSpec, roots: Sequence[str | Path], on_bad_row: str, reasons: Sequence[str],
                 choose_parser: ParserChooser, key: Callable[[Any], Hashable]) -> tuple[list, dict[str, int], int]:
    """Parse every record with the parser chosen from the first one; returns (items, drop counts, rows read).

    Items with the ``key`` of an earlier one are dropped as ``duplicate``. With ``on_bad_row="error"`` a malformed
    row raises DataError naming the source, row and field; with ``"skip"`` it is counted as ``malformed``.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row must be one of {'|'.join(ON_BAD_ROW)}, got {on_bad_row!r}")
    where, records = open_source(spec, roots)
    drops = dict.fromkeys(reasons, 0)
    items, seen, parse, rows_read = [], set(), None, 0
    for pos, record in islice(records, spec.max_rows):
        rows_read += 1
        try:
            if isinstance(record, RowError):
                raise record
            if not isinstance(record, Mapping):
                raise RowError(None, f"expected an object, got {type(record).__name__}")
            parse = parse or choose_parser(record, where, pos)
            item = parse(record)
            if key(item) in seen:
                raise RowDropped("duplicate")
            seen.add(key(item))
        except RowError as err:
            if on_bad_row == "error":
                field = f", field {err.field!r}" if err.field else ""
                raise DataError(f"{where}, {pos}{field}: {err.message}") from None
            drops["malformed"] += 1
        except RowDropped as drop:
            drops[drop.reason] += 1
        else:
            items.append(item)
    if rows_read == 0:
        raise DataError(f"{where}: no rows (is the file empty?)")
    return items, drops, rows_read
