"""Errors of the data layer: DataError for callers; RowError and RowDropped for the row-by-row parsing."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data or data configuration; the message names the file, row/line and field."""


class RowError(Exception):
    """A malformed row; ``field`` is None when the whole row is unusable (e.g. invalid JSON)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class RowDropped(Exception):
    """A well-formed row that is dropped for ``reason`` (counted, never an error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
