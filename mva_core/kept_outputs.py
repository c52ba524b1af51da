"""Outputs a failed rerun keeps (Snakemake's ``update()`` flag), dated back so that the next run redoes their job.

Snakemake deletes a job's outputs when the job starts. Outputs flagged ``update()`` (the evaluation prompts,
generations, scores and tables) are backed up instead and restored when the job fails, so a failed rerun leaves the
previous run's files byte for byte. Snakemake 9.27 restores them with a fresh mtime, though, and records the failed
job's metadata (params, code, input checksums) for them, so the next run would call the old files up to date.
``date_back_kept_outputs``, run by the workflow's ``onerror`` handler (rules/common.smk), undoes that for every output
of a job that failed for good: it deletes the file's metadata record (what ``snakemake --cleanup-metadata`` does) and
sets its mtime to 1970-01-01 00:00:01, so the next run sees the job's inputs as newer and redoes it. Contents are
untouched.
"""
from __future__ import annotations

import os
from typing import Any

KEPT_MTIME = 1
"""The mtime of a kept output of a failed job (Snakemake skips its input-mtime check for an output mtime of 0)."""


def date_back_kept_outputs(workflow: Any) -> list[str]:
    """For every job of this ``snakemake`` run that failed after its last attempt: make each of its ``update()``
    outputs that exists out of date (no metadata, mtime ``KEPT_MTIME``). Returns their paths."""
    from snakemake.io import IOFile, is_flagged

    kept = []
    for failed in workflow.scheduler.failed:
        for job in getattr(failed, "jobs", [failed]):  # a group job fails as a whole
            for path in job.output:
                if is_flagged(path, "update") and os.path.exists(path):
                    workflow.persistence.cleanup_metadata(IOFile(str(path)))
                    os.utime(path, (KEPT_MTIME, KEPT_MTIME))
                    kept.append(str(path))
    return sorted(kept)
