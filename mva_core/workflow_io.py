"""Glue for the thin workflow scripts: a job's log file and its provenance record."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mva_core.artifacts import provenance_scope, verify_artifact
from mva_core.provenance import snakemake_record


@contextlib.contextmanager
def logged_job(job: Any) -> Iterator[logging.Logger]:
    """Run a workflow script's body for the ``snakemake`` object ``job``.

    stdout, stderr and logging go to the job's log file (line-buffered), any exception is logged, every input is
    verified (``verify_artifact``) before use, and the job's provenance record is attached to every artifact
    written in the block.
    """
    log_path = job.log[0] if len(job.log) else None
    with _logging_to(log_path) as logger:
        for path in job.input:
            verify_artifact(path)
        record = snakemake_record(job)
        with provenance_scope(record):
            logger.info("compute: %(device)s, %(dtype)s (%(reason)s)", record["compute"])
            yield logger


@contextlib.contextmanager
def _logging_to(log_path: str | None) -> Iterator[logging.Logger]:
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
