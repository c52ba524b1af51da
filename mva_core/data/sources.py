"""Where preference data and prompts come from: a ``SourceSpec``, its resolution to a local file under a data root
or a Hugging Face hub id, and the records read from it (``.json`` array, ``.jsonl``, ``.jsonl.gz``, ``.json.gz``,
``.parquet``, or a hub dataset split)."""
from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mva_core.data.derived import DERIVATIONS
from mva_core.data.errors import DataError, RowError
from mva_core.data.formats import FORMATS, PKU_VIEWS
from mva_core.oracles import OracleDerivation

SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FILE_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]*$")

Records = Iterator[tuple[str, Any]]
"""``(position, record)`` pairs, position naming the line or row for messages; a record is a row's object, or a
RowError for a line that is not valid JSON."""


@dataclass(frozen=True)
class SourceSpec:
    """One preference-data source: a file (relative to a data root, or absolute) or a hub id."""

    path: str
    format: str = "auto"
    view: str | None = None
    hub_split: str = "train"
    hub_data_dir: str | None = None
    max_rows: int | None = None
    derive: str | OracleDerivation | None = None

    def __post_init__(self) -> None:
        if isinstance(self.derive, Mapping):
            try:
                object.__setattr__(self, "derive", OracleDerivation(**self.derive))
            except (TypeError, ValueError) as err:
                raise DataError(f"source {self.path!r}: derive {self.derive!r}: {err}") from None
        if not isinstance(self.derive, OracleDerivation) and self.derive not in DERIVATIONS:
            raise DataError(f"source {self.path!r}: derive {self.derive!r} is not one of {DERIVATIONS}")
        if self.format not in FORMATS:
            raise DataError(f"source {self.path!r}: format {self.format!r} is not one of {'|'.join(FORMATS)}")
        if self.view is not None and self.view not in PKU_VIEWS:
            raise DataError(f"source {self.path!r}: view {self.view!r} is not one of {'|'.join(PKU_VIEWS)}")
        if self.format == "pku" and self.view is None:
            raise DataError(f"source {self.path!r}: format 'pku' needs view='better' or view='safer'")
        if self.max_rows is not None and (isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int)
                                          or self.max_rows < 1):
            raise DataError(f"source {self.path!r}: max_rows must be a positive integer or None, got {self.max_rows!r}")

    @property
    def label(self) -> str:
        """The value of the ``source`` column: the path, plus ``#view`` for a PKU view and ``#derive``."""
        derive = self.derive.label if isinstance(self.derive, OracleDerivation) else self.derive
        return "#".join(part for part in (self.path, self.view, derive) if part)


def as_spec(source: SourceSpec | str) -> SourceSpec:
    """``source`` itself, or a path as a SourceSpec with defaults."""
    return source if isinstance(source, SourceSpec) else SourceSpec(path=str(source))


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hugging Face repository id (``owner/name``, no file extension)."""
    return bool(_HUB_ID.fullmatch(name)) and not _FILE_EXTENSION.search(name)


def resolve_source(path: str, roots: Sequence[str | Path]) -> Path | str:
    """Local file for ``path`` (absolute, or under the first root that has it), else a hub id string."""
    candidate = Path(path)
    if candidate.is_absolute():
        if candidate.exists():
            return candidate
        raise DataError(f"data file {path} not found")
    for root in roots:
        if (Path(root) / path).exists():
            return Path(root) / path
    if is_hub_id(path):
        return path
    if not roots:
        raise DataError(f"data file {path!r} not found: no data roots were given; pass roots or an absolute path")
    tried = ", ".join(str(Path(root) / path) for root in roots)
    raise DataError(f"data file {path!r} not found; looked in: {tried}. Put the file at {Path(roots[0]) / path}")


def open_source(spec: SourceSpec, roots: Sequence[str | Path]) -> tuple[str, Records]:
    """``(where, records)``: a name of the source for messages and its records."""
    resolved = resolve_source(spec.path, roots)
    if isinstance(resolved, str):
        where = f"Hugging Face dataset {resolved} (data_dir={spec.hub_data_dir}, split={spec.hub_split})"
        return where, _hub_records(spec, roots, where)
    return str(resolved), _file_records(resolved)


def _hub_records(spec: SourceSpec, roots: Sequence[str | Path], where: str) -> Records:
    import datasets

    try:
        dataset = datasets.load_dataset(spec.path, data_dir=spec.hub_data_dir, split=spec.hub_split)
    except Exception as exc:  # offline, unknown id, bad split: all surface the same way
        local = Path(str(roots[0]) if roots else "<data root>") / spec.path
        raise DataError(
            f"could not load {where}: {type(exc).__name__}: {exc}. Without network, download it elsewhere, "
            f"put a local copy (e.g. {local / (spec.hub_data_dir or '') / (spec.hub_split + '.jsonl.gz')}) "
            "under a data root and set the source path to that file"
        ) from exc
    for index, record in enumerate(dataset, start=1):
        yield f"row {index}", record


def check_data_file(path: Path) -> None:
    """Raise DataError unless ``path`` is a file with a supported suffix (a folder or a ``.csv`` is not)."""
    if path.is_dir() or not path.name.lower().endswith(SUFFIXES):
        what = "a folder, not a data file" if path.is_dir() else "unsupported data file"
        raise DataError(f"{path}: {what}; expected a file ending in one of {', '.join(SUFFIXES)}")


def _file_records(path: Path) -> Records:
    name = path.name.lower()
    check_data_file(path)
    try:
        if name.endswith(".parquet"):
            yield from _parquet_records(path)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            with _open_text(path) as fh:
                yield from _json_line_records(fh)
        else:
            with _open_text(path) as fh:
                yield from _json_array_records(path, fh.read())
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read file ({type(exc).__name__}: {exc})") from exc


def _open_text(path: Path) -> IO[str]:
    """UTF-8 text, with a leading byte-order mark (as Windows editors write it) skipped."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _json_line_records(lines: Iterable[str]) -> Records:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {lineno}", RowError(None, f"invalid JSON ({exc.msg} at column {exc.colno})")


def _json_array_records(path: Path, text: str) -> Records:
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    if text.lstrip().startswith("{"):  # JSON lines saved under a .json name
        yield from _json_line_records(text.splitlines())
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    for index, record in enumerate(data, start=1):
        yield f"row {index}", record


def _parquet_records(path: Path) -> Records:
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            index += 1
            yield f"row {index}", record
