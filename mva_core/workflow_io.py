"""Glue for the thin workflow scripts: a job's log file, its provenance record, its device check and the retry of a permanent failure.

This module imports nothing heavy: a script imports ``logged_job`` first and its heavy libraries (torch,
transformers, the modules that load them) inside the ``with logged_job(snakemake):`` block, so that a retry that
``mva_core.job_failures`` refuses ends before they load.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mva_core.job_failures import FailureRecord


@contextlib.contextmanager
def logged_job(job: Any) -> Iterator[logging.Logger]:
    """Run a workflow script's body for the ``snakemake`` object ``job``.

    A retry of a job whose earlier attempt failed permanently ends at once, its log quoting that error
    (``mva_core.job_failures``). Otherwise stdout, stderr and logging go to the job's log file (line-buffered), any
    exception is logged (and recorded when permanent), the job's device is checked first (``check_job_device``),
    every input is verified (``verify_artifact``) before use, and the job's provenance record is attached to every
    artifact written in the block.
    """
    log_path = job.log[0] if len(job.log) else None
    failures = FailureRecord.of(job)
    if failures is not None:
        failures.refuse_retry(log_path)
    from mva_core.artifacts import provenance_scope, verify_artifact
    from mva_core.provenance import snakemake_record

    with _logging_to(log_path, failures) as logger:
        check_job_device(job)
        for path in job.input:
            verify_artifact(path)
        record = snakemake_record(job)
        with provenance_scope(record):
            logger.info("compute: %(device)s, %(dtype)s (%(reason)s)", record["compute"])
            yield logger
    if failures is not None:
        failures.clear()


def check_job_device(job: Any) -> None:
    """Before anything is read or loaded: with ``compute.device: cpu`` hide the GPUs from the job, and stop a GPU
    stage (a rule with a ``gpu`` resource) that needs a GPU and finds none (``precision.require_gpu``)."""
    compute = job.config.get("compute", {})
    device = compute.get("device", "auto")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # read when torch first initialises CUDA, i.e. later in this job
        return
    from mva_core.precision import gpu_required, require_gpu  # imports torch: after the retry check

    gpus = job.resources.get("gpu")
    if gpu_required(device, gpus):
        wildcards = ", ".join(f"{name}={value}" for name, value in job.wildcards.items())
        reason = "compute.device: cuda" if device == "cuda" else f"compute.gpus_per_job: {gpus}"
        require_gpu(f"rule {job.rule}" + (f" ({wildcards})" if wildcards else ""), reason)


@contextlib.contextmanager
def _logging_to(log_path: str | None, failures: FailureRecord | None = None) -> Iterator[logging.Logger]:
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
            except Exception as error:
                logger.exception("job failed")
                if failures is not None and failures.record(error):
                    logger.error("this error is permanent: a retry of this job (same settings and inputs) ends at "
                                 "once, quoting it; see %s", failures.path)
                raise
