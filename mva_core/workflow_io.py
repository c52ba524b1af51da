"""Glue for the thin workflow scripts: route a job's output to its Snakemake log file."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def logged_job(log_path: str | None) -> Iterator[logging.Logger]:
    """Send stdout, stderr and logging of the block to ``log_path`` (line-buffered), and log any exception."""
    if not log_path:
        yield logging.getLogger("mva")
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as handle:
        logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
        logger = logging.getLogger("mva")
        with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            try:
                yield logger
            except Exception:
                logger.exception("job failed")
                raise
