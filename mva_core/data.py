"""Preference-data layer: read pairs and evaluation prompts, normalise them to chat messages, split by prompt.

Sources are local files (``.json`` array, ``.jsonl``, ``.jsonl.gz``, ``.json.gz``, ``.parquet``) or Hugging Face
hub ids. Rows come in one of four formats (detected from the keys of the first row unless given):

* ``hh``: ``{chosen, rejected}`` full Anthropic transcripts (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``);
* ``pku``: ``{prompt, response_0, response_1, better_response_id, safer_response_id}`` (needs a view);
* ``pairs``: ``{prompt, chosen, rejected}``, prompt a string or a list of ``{role, content}`` messages;
* ``prompt_response``: ``{prompt, response: [preferred, other]}``.

All texts are stripped of surrounding whitespace. Dropped rows are counted per reason in ``df.attrs["drops"]``.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mva_core.contracts import DATA_SUMMARY, PAIRS
from mva_core.oracles import OracleDerivation, derive_oracle_preference

FORMATS = ("auto", "hh", "pku", "pairs", "prompt_response")
PKU_VIEWS = {"better": "better_response_id", "safer": "safer_response_id"}
DROP_REASONS = ("malformed", "prompt_mismatch", "empty", "identical", "duplicate", "similar_length", "oracle_margin",
                "length_confound")
DERIVATIONS = (None, "shorter")  # or an OracleDerivation ({scorer, margin} in the config)
SHORTER_MIN_RATIO = 1.25  # derive "shorter": keep pairs whose longer reply has >= 1.25x the words of the shorter
PROMPT_DROP_REASONS = ("malformed", "empty", "duplicate")
PROMPT_COLUMNS = ["prompt_id", "prompt", "category", "source"]
SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet")
ON_BAD_ROW = ("error", "skip")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FILE_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]*$")
_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}

Messages = list[dict[str, str]]


class DataError(ValueError):
    """Bad input data or data configuration; the message names the file, row/line and field."""


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


@dataclass(frozen=True)
class _Pair:
    prompt: Messages
    chosen: str
    rejected: str


class _RowError(Exception):
    """A malformed row; ``field`` is None when the whole row is unusable (e.g. invalid JSON)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Drop(Exception):
    """A well-formed row that is dropped for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- hashing


def prompt_text(messages: Sequence[Mapping[str, str]]) -> str:
    """Canonical flat rendering of chat messages ("role: content" lines), used for hashing and dedup."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def prompt_id(messages: Sequence[Mapping[str, str]]) -> str:
    """Stable id of a prompt: 16 hex digits of the sha256 of its canonical text."""
    return _digest(prompt_text(messages))


def conversation_key(messages: Sequence[Mapping[str, str]]) -> str:
    """The split key of a prompt: its first user turn, case- and whitespace-normalised.

    Multi-turn and last-turn variants of one conversation (e.g. HH test transcripts and the lossy last-turn
    derivative) share their opening question, so keying on it keeps them in the same split.
    """
    first = next((m["content"] for m in messages if m["role"] == "user"), "")
    return " ".join(first.lower().split())


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _unit_interval(text: str) -> float:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16) / 2**64


# ---------------------------------------------------------------- locating and reading


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
    if _HUB_ID.fullmatch(path) and not _FILE_EXTENSION.search(path):
        return path
    if not roots:
        raise DataError(f"data file {path!r} not found: no data roots were given; pass roots or an absolute path")
    tried = ", ".join(str(Path(root) / path) for root in roots)
    raise DataError(f"data file {path!r} not found; looked in: {tried}. Put the file at {Path(roots[0]) / path}")


def _open_source(spec: SourceSpec, roots: Sequence[str | Path]) -> tuple[str, Iterator[tuple[str, Any]]]:
    """``(where, records)``: a name for messages and an iterator of ``(position, record)``."""
    resolved = resolve_source(spec.path, roots)
    if isinstance(resolved, str):
        where = f"Hugging Face dataset {resolved} (data_dir={spec.hub_data_dir}, split={spec.hub_split})"
        return where, _hub_records(spec, roots, where)
    return str(resolved), _file_records(resolved)


def _hub_records(spec: SourceSpec, roots: Sequence[str | Path], where: str) -> Iterator[tuple[str, Any]]:
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


def _file_records(path: Path) -> Iterator[tuple[str, Any]]:
    name = path.name.lower()
    if path.is_dir() or not name.endswith(SUFFIXES):
        raise DataError(f"{path}: unsupported data file; expected one of {', '.join(SUFFIXES)}")
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


def _open_text(path: Path):
    """UTF-8 text, with a leading byte-order mark (as Windows editors write it) skipped."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _json_line_records(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {lineno}", _RowError(None, f"invalid JSON ({exc.msg} at column {exc.colno})")


def _json_array_records(path: Path, text: str) -> Iterator[tuple[str, Any]]:
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


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            index += 1
            yield f"row {index}", record


# ---------------------------------------------------------------- field helpers


def _string(row: Mapping[str, Any], field: str) -> str:
    if field not in row:
        raise _RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise _RowError(field, f"expected a string, got {type(value).__name__}")
    return value.strip()


def _messages(value: Any, field: str) -> Messages:
    """A prompt given as a string (one user message) or as a list of ``{role, content}`` messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value.strip()}]
    if not isinstance(value, (list, tuple)):
        raise _RowError(field, f"expected a string or a list of messages, got {type(value).__name__}")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise _RowError(field, f"message {index} is {type(message).__name__}, not an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise _RowError(field, f"message {index} has no string {key!r}")
        messages.append({"role": message["role"], "content": message["content"].strip()})
    if messages and messages[-1]["role"] != "user":
        raise _RowError(field, f"the last message is from {messages[-1]['role']!r}, not 'user'")
    return messages


def _prompt(row: Mapping[str, Any]) -> Messages:
    if "prompt" not in row:
        raise _RowError("prompt", "missing")
    return _messages(row["prompt"], "prompt")


def _choice(row: Mapping[str, Any], field: str) -> int:
    value = row.get(field)
    if isinstance(value, bool) or value not in (0, 1):
        raise _RowError(field, f"expected 0 or 1, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- row formats


def _hh_turns(text: str, field: str) -> Messages:
    parts = _HH_MARKER.split(text)
    if parts[0].strip():
        raise _RowError(field, "text before the first 'Human:'/'Assistant:' turn")
    return [{"role": _HH_ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _hh_split(text: str, field: str) -> tuple[Messages, str]:
    """Split a transcript into (dialogue before the final Assistant turn, final reply)."""
    text = text.lstrip()
    finals = [m for m in _HH_MARKER.finditer(text) if m.group(1) == "Assistant"]
    if not finals:
        raise _RowError(field, "transcript has no 'Assistant:' turn")
    return _hh_turns(text[: finals[-1].start()], field), text[finals[-1].end():].strip()


def _parse_hh(row: Mapping[str, Any]) -> _Pair:
    prompt, chosen = _hh_split(_string(row, "chosen"), "chosen")
    other, rejected = _hh_split(_string(row, "rejected"), "rejected")
    if prompt != other:
        raise _Drop("prompt_mismatch")
    if prompt and prompt[-1]["role"] != "user":
        raise _RowError("chosen", "the turn before the final Assistant turn is not a Human turn")
    return _Pair(prompt, chosen, rejected)


def _parse_pairs(row: Mapping[str, Any]) -> _Pair:
    return _Pair(_prompt(row), _string(row, "chosen"), _string(row, "rejected"))


def _parse_prompt_response(row: Mapping[str, Any]) -> _Pair:
    prompt = _prompt(row)
    response = row.get("response")
    if not isinstance(response, (list, tuple)) or len(response) != 2 or not all(isinstance(r, str) for r in response):
        raise _RowError("response", f"expected a list of two strings [preferred, other], got {response!r:.80}")
    return _Pair(prompt, response[0].strip(), response[1].strip())


def _pku_parser(view: str) -> Callable[[Mapping[str, Any]], _Pair]:
    def parse(row: Mapping[str, Any]) -> _Pair:
        prompt = _string(row, "prompt")
        responses = (_string(row, "response_0"), _string(row, "response_1"))
        best = _choice(row, PKU_VIEWS[view])
        return _Pair([{"role": "user", "content": prompt}], responses[best], responses[1 - best])

    return parse


def _detect_format(keys: set[str]) -> str | None:
    if {"prompt", "response_0", "response_1"} <= keys:
        return "pku"
    if {"prompt", "response"} <= keys:
        return "prompt_response"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "pairs"
    if {"chosen", "rejected"} <= keys:
        return "hh"
    return None


def _pair_parser(spec: SourceSpec, first: Mapping[str, Any], where: str, pos: str) -> Callable[..., _Pair]:
    fmt = spec.format if spec.format != "auto" else _detect_format(set(first))
    if fmt is None:
        raise DataError(f"{where}: cannot detect the row format from the keys of {pos} ({', '.join(sorted(first))}); "
                        f"set format to one of {'|'.join(FORMATS[1:])}")
    if fmt == "pku" and spec.view is None:
        raise DataError(f"{where}: PKU rows need view='better' (helpfulness) or view='safer' (harmlessness)")
    if fmt != "pku" and spec.view is not None:
        raise DataError(f"{where}: view={spec.view!r} applies only to pku rows, but the rows are {fmt!r}")
    parsers = {"hh": _parse_hh, "pairs": _parse_pairs, "prompt_response": _parse_prompt_response}
    return _pku_parser(spec.view) if fmt == "pku" else parsers[fmt]


# ---------------------------------------------------------------- loading


def _as_spec(source: SourceSpec | str) -> SourceSpec:
    return source if isinstance(source, SourceSpec) else SourceSpec(path=str(source))


def _collect(spec: SourceSpec, roots: Sequence[str | Path], on_bad_row: str, reasons: Sequence[str],
             choose_parser: Callable[[Mapping[str, Any], str, str], Callable], key: Callable[[Any], tuple],
             ) -> tuple[list, dict[str, int], int]:
    """Parse every record with the parser chosen from the first one; returns (items, drop counts, rows read)."""
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row must be one of {'|'.join(ON_BAD_ROW)}, got {on_bad_row!r}")
    where, records = _open_source(spec, roots)
    drops = dict.fromkeys(reasons, 0)
    items, seen, parse, rows_read = [], set(), None, 0
    for pos, record in islice(records, spec.max_rows):
        rows_read += 1
        try:
            if isinstance(record, _RowError):
                raise record
            if not isinstance(record, Mapping):
                raise _RowError(None, f"expected an object, got {type(record).__name__}")
            parse = parse or choose_parser(record, where, pos)
            item = parse(record)
            if key(item) in seen:
                raise _Drop("duplicate")
            seen.add(key(item))
        except _RowError as err:
            if on_bad_row == "error":
                field = f", field {err.field!r}" if err.field else ""
                raise DataError(f"{where}, {pos}{field}: {err.message}") from None
            drops["malformed"] += 1
        except _Drop as drop:
            drops[drop.reason] += 1
        else:
            items.append(item)
    if rows_read == 0:
        raise DataError(f"{where}: no rows (is the file empty?)")
    return items, drops, rows_read


def _checked_pair(parse: Callable[[Mapping[str, Any]], _Pair]) -> Callable[[Mapping[str, Any]], _Pair]:
    def checked(row: Mapping[str, Any]) -> _Pair:
        pair = parse(row)
        if not pair.prompt or not pair.prompt[-1]["content"] or not pair.chosen or not pair.rejected:
            raise _Drop("empty")
        if pair.chosen == pair.rejected:
            raise _Drop("identical")
        return pair

    return checked


def _pair_key(pair: _Pair) -> tuple[str, str, str]:
    return prompt_text(pair.prompt), pair.chosen, pair.rejected


def load_pairs(source: SourceSpec | str, roots: Sequence[str | Path] = (), on_bad_row: str = "error") -> pd.DataFrame:
    """Preference pairs of one source as a frame with the columns of ``contracts.PAIRS``.

    ``attrs["drops"]`` counts dropped rows per reason (``DROP_REASONS``) and ``attrs["rows_read"]`` the rows read.
    With ``on_bad_row="error"`` a malformed row raises DataError; with ``"skip"`` it is counted as ``malformed``.
    """
    spec = _as_spec(source)
    pairs, drops, rows_read = _collect(
        spec, roots, on_bad_row, DROP_REASONS,
        lambda first, where, pos: _checked_pair(_pair_parser(spec, first, where, pos)), _pair_key,
    )
    label = spec.label
    rows = [(_digest(label, *_pair_key(p)), p.prompt, p.chosen, p.rejected, label) for p in pairs]
    df = pd.DataFrame(rows, columns=PAIRS.column_names)
    if spec.derive == "shorter":
        df, drops["similar_length"] = derive_shorter_preference(df)
    elif isinstance(spec.derive, OracleDerivation):
        df, oracle_drops = derive_oracle_preference(df, spec.derive)
        drops.update(oracle_drops)
    df.attrs.update(drops=drops, rows_read=rows_read)
    return df


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


def _prompt_row_parser(prompt_field: str, category_field: str | None
                       ) -> Callable[[Mapping[str, Any]], tuple[Messages, str | None]]:
    def parse(row: Mapping[str, Any]) -> tuple[Messages, str | None]:
        if prompt_field not in row:
            raise _RowError(prompt_field, "missing")
        messages = _messages(row[prompt_field], prompt_field)
        category = row.get(category_field) if category_field else None
        if category is not None and not isinstance(category, str):
            raise _RowError(category_field, f"expected a string, got {type(category).__name__}")
        if not messages or not messages[-1]["content"]:
            raise _Drop("empty")
        return messages, category

    return parse


def load_prompts(source: SourceSpec | str, roots: Sequence[str | Path] = (), on_bad_row: str = "error",
                 prompt_field: str = "prompt", category_field: str | None = "category") -> pd.DataFrame:
    """Evaluation prompts (rows with a prompt and an optional category) as a frame with ``PROMPT_COLUMNS``.

    The prompt is read from ``prompt_field`` (a string becomes one user message, or a list of ``{role, content}``
    messages ending with the user's) and the category, a string or missing, from ``category_field`` (None: no
    categories). Drops (``empty``, ``duplicate`` prompt, ``malformed``) and rows read go in ``attrs`` as for
    ``load_pairs``; a malformed row raises DataError naming the file, row and field unless ``on_bad_row="skip"``.
    """
    spec = _as_spec(source)
    parse = _prompt_row_parser(prompt_field, category_field)
    items, drops, rows_read = _collect(
        spec, roots, on_bad_row, PROMPT_DROP_REASONS, lambda *_: parse, lambda item: (prompt_text(item[0]),)
    )
    rows = [(prompt_id(messages), messages, category, spec.label) for messages, category in items]
    df = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
    df["category"] = pd.Series([category for _, category in items], index=df.index, dtype=object)  # keep None
    df.attrs.update(drops=drops, rows_read=rows_read)
    return df


# ---------------------------------------------------------------- splitting


def _split_bounds(fractions: Mapping[str, float]) -> list[tuple[str, float, float]]:
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
    bounds = _split_bounds(fractions)
    position = np.array([_unit_interval(salt + conversation_key(messages)) for messages in df["prompt"]], dtype=float)
    shuffled = df.assign(_order=[_digest(salt, pair_id) for pair_id in df["pair_id"]])
    splits = {}
    for name, lower, upper in bounds:
        part = shuffled[(position >= lower) & (position < upper)].sort_values(["_order", "pair_id"], kind="stable")
        part = part.drop(columns="_order").reset_index(drop=True)
        part.attrs = {}
        splits[name] = part
    return splits


# ---------------------------------------------------------------- per-value preparation


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
    _split_bounds(fractions)
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


def _drop_cross_source_duplicates(pairs: pd.DataFrame, summary: dict[str, list[tuple[str, str, int]]]) -> pd.DataFrame:
    """Keep the first of pairs with the same prompt, chosen and rejected text (sources in the given order)."""
    keys = pd.Series(list(zip(map(prompt_text, pairs["prompt"]), pairs["chosen"], pairs["rejected"], strict=True)),
                     dtype=object)
    duplicated = keys.duplicated().to_numpy()
    _count_dropped(summary, pairs["source"][duplicated], "cross_source_duplicate")
    kept = pairs[~duplicated].reset_index(drop=True)
    kept.attrs = {}
    return kept


def _count_dropped(summary: dict[str, list[tuple[str, str, int]]], sources: pd.Series, reason: str) -> None:
    for label, rows in sources.value_counts().items():
        summary[label].append(("dropped", reason, int(rows)))


def _summary_frame(value: str, summary: dict[str, list[tuple[str, str, int]]]) -> pd.DataFrame:
    rows = [(value, label, stage, reason, rows) for label, entries in summary.items()
            for stage, reason, rows in entries if stage != "dropped" or rows > 0]
    return pd.DataFrame(rows, columns=DATA_SUMMARY.column_names).astype({"rows": "int64"})
