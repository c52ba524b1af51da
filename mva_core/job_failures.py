"""Permanent job failures: errors a retry cannot fix, and the retry that ends at once instead of redoing the work.

Snakemake retries a failed job (``retries: 1`` in profiles/default) so that a job killed for memory gets another
attempt with more (``mem_mb`` × attempt). An error that the job's own code raises because of its configuration or its
data (``is_permanent``: a ``MemoryError`` from a configured size, ``ConfigError``, ``DataError``, a corrupt input)
would only repeat. The first attempt records it beside its log (``<log>.failed.json``: the error, its traceback and a
fingerprint of the job's rule, wildcards, params and inputs); a later attempt of the same job with the same
fingerprint ends at once, before the script's heavy imports, writing a log that quotes the first attempt's error (Snakemake
removes a job's log when an attempt starts). A first attempt removes any record left by an earlier run, and a success
removes it too, so a new ``snakemake`` run always tries again. A kill by the operating system raises no Python
exception and leaves no record, so it keeps its retry.

The attempt number comes from the job's ``attempt`` resource (``job_attempt`` in rules/common.smk): Snakemake gives
it to resource functions but not to scripts. This module imports nothing heavy.
"""
from __future__ import annotations

import hashlib
import json
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_SUFFIX = ".failed.json"


def is_permanent(error: BaseException) -> bool:
    """Whether a retry of the same job would fail the same way: a configured size that does not fit in memory, a
    config error, bad data, or a corrupt input artifact."""
    from mva_core.artifacts import CorruptArtifactError
    from mva_core.config_errors import ConfigError
    from mva_core.data.errors import DataError

    return isinstance(error, MemoryError | ConfigError | DataError | CorruptArtifactError)


def job_fingerprint(job: Any) -> str:
    """sha256 of the job's rule, wildcards, params and inputs (path, size, mtime): what a retry would run with."""
    inputs = []
    for path in sorted(set(map(str, job.input))):
        stat = os.stat(path) if os.path.exists(path) else None
        inputs.append([path, stat.st_size, stat.st_mtime_ns] if stat else [path])
    content = {"rule": job.rule, "wildcards": dict(job.wildcards.items()), "params": dict(job.params.items()),
               "inputs": inputs}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class FailureRecord:
    """The permanent-failure record of one job (``path``), for its attempt ``attempt`` with ``fingerprint``."""

    path: Path
    attempt: int
    fingerprint: str
    job_name: str

    @classmethod
    def of(cls, job: Any) -> FailureRecord | None:
        """The record beside the log of the ``snakemake`` object ``job`` (None for a job without a log)."""
        if not len(job.log):
            return None
        wildcards = ", ".join(f"{k}={v}" for k, v in job.wildcards.items())
        return cls(Path(str(job.log[0]) + RECORD_SUFFIX), int(job.resources.get("attempt", 1)), job_fingerprint(job),
                   f"{job.rule}" + (f" ({wildcards})" if wildcards else ""))

    def refuse_retry(self, log_path: str | os.PathLike) -> None:
        """On a retry of a job whose earlier attempt failed permanently with the same fingerprint: write the job's
        log (quoting that error) and exit; on a first attempt: forget any record of an earlier run."""
        if self.attempt <= 1:
            self.path.unlink(missing_ok=True)
            return
        earlier = self._read()
        if earlier is None or earlier.get("fingerprint") != self.fingerprint:
            return
        message = (f"attempt {self.attempt} of {self.job_name} not run: attempt {earlier['attempt']} failed with an "
                   f"error that a retry cannot fix, with the same settings and inputs:\n  "
                   f"{earlier['error']}: {earlier['message']}\nFix the cause and run snakemake again (a new run "
                   f"tries the job again).")
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(f"{message}\n\nAttempt {earlier['attempt']}'s error:\n{earlier['traceback']}")
        raise SystemExit(message)

    def record(self, error: BaseException) -> bool:
        """Record ``error`` if it is permanent (written atomically); return whether it was."""
        if not is_permanent(error):
            return False
        content = {"job": self.job_name, "attempt": self.attempt, "fingerprint": self.fingerprint,
                   "error": type(error).__name__, "message": str(error),
                   "traceback": "".join(traceback.format_exception(error))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(content, indent=1))
        os.replace(temporary, self.path)
        return True

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
