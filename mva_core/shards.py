"""Resumable work in shards: each finished shard is kept as Parquet so a killed job redoes only the unfinished ones.

Shards live in ``<shard_dir>/<fingerprint>/shard-<i>.parquet``; the fingerprint covers everything that determines
the result (inputs, settings, shard size), so a rerun with other inputs never reuses stale shards.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mva_core.artifacts import write_parquet


def run_sharded(n_rows: int, shard_size: int, folder: Path | None, compute: Callable[[int, int], pd.DataFrame],
                reused: Callable[[int], None] = lambda rows: None) -> pd.DataFrame:
    """``compute(start, stop)`` for consecutive row ranges of ``shard_size``, reusing shards already in ``folder``.

    ``reused(rows)`` is called for each shard read back instead of computed (e.g. to advance a progress bar).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    frames = []
    for index, start in enumerate(range(0, n_rows, shard_size)):
        stop = min(start + shard_size, n_rows)
        path = folder / f"shard-{index:05d}.parquet" if folder is not None else None
        if path is not None and path.is_file():
            frames.append(pd.read_parquet(path))
            reused(stop - start)
            continue
        frame = compute(start, stop)
        if path is not None:
            write_parquet(frame, path)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
