"""Resumable work in shards: each finished shard is kept as Parquet so a killed job redoes only the unfinished ones.

Shards live in ``<shard_dir>/<fingerprint>/shard-<i>.parquet``; the fingerprint covers everything that determines
the result (inputs, settings, shard size), so a rerun with other inputs never reuses stale shards. Shards carry the
checksums of every other artifact (``mva_core.artifacts``): Parquet page checksums, and the folder's
``checksums.sha256`` manifest, which records each shard's sha256 once the shard is in place. A shard is reused
only if its recorded sha256, page checksums, row count and columns all match; otherwise it is recomputed, and one
warning line in the job's log names the shard and the reason.
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mva_core.artifacts import CHECKSUMS_FILE, file_sha256, format_checksums, read_checksums, write_parquet, write_text

log = logging.getLogger(__name__)


class UnusableShardError(ValueError):
    """A shard on disk that must not be reused; the message says why."""


def run_sharded(n_rows: int, shard_size: int, folder: Path | None, compute: Callable[[int, int], pd.DataFrame],
                columns: Sequence[str], reused: Callable[[int], None] = lambda rows: None) -> pd.DataFrame:
    """``compute(start, stop)`` (a frame of ``columns``) for consecutive row ranges of ``shard_size``, reusing the
    verified shards already in ``folder``.

    ``reused(rows)`` is called for each shard read back instead of computed (e.g. to advance a progress bar).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    recorded = _recorded_checksums(folder) if folder is not None else {}
    frames = []
    for index, start in enumerate(range(0, n_rows, shard_size)):
        stop = min(start + shard_size, n_rows)
        path = folder / f"shard-{index:05d}.parquet" if folder is not None else None
        if path is not None and path.is_file():
            try:
                frames.append(_read_shard(path, recorded.get(path.name), stop - start, columns))
                reused(stop - start)
                continue
            except UnusableShardError as err:
                log.warning("shard %s cannot be reused (%s): recomputing it", path, err)
        frame = compute(start, stop)
        if path is not None:
            write_parquet(frame, path)
            recorded[path.name] = file_sha256(path)
            write_text(format_checksums(recorded), folder / CHECKSUMS_FILE)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _recorded_checksums(folder: Path) -> dict[str, str]:
    """The folder's shard checksums; none (so every shard is recomputed) when its manifest cannot be read."""
    try:
        return read_checksums(folder / CHECKSUMS_FILE)
    except (OSError, UnicodeDecodeError) as err:
        log.warning("shard checksums %s cannot be read (%s): recomputing every shard", folder / CHECKSUMS_FILE, err)
        return {}


def _read_shard(path: Path, sha256: str | None, rows: int, columns: Sequence[str]) -> pd.DataFrame:
    """The shard at ``path`` if its bytes have the recorded ``sha256``, its Parquet pages their checksums, and it
    holds ``rows`` rows of exactly ``columns``; else UnusableShardError saying which check failed."""
    if sha256 is None:
        raise UnusableShardError(f"no sha256 recorded in {CHECKSUMS_FILE}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnusableShardError(f"cannot be read ({err})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UnusableShardError("differs from the sha256 recorded when it was written")
    try:
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as err:
        raise UnusableShardError(f"unreadable Parquet ({err})") from None
    if table.num_rows != rows:
        raise UnusableShardError(f"{table.num_rows} rows, expected {rows}")
    if table.column_names != list(columns):
        raise UnusableShardError(f"columns {table.column_names}, expected {list(columns)}")
    return pd.read_parquet(io.BytesIO(data))
