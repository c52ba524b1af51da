"""What made an artifact: the job's rule, seed, settings hashes, input digests and library versions.

A workflow job builds one record (``job_record``) and activates it with ``artifacts.provenance_scope``; every
Parquet file and artifact directory the job writes then carries it (see ``mva_core.artifacts``). The record has
no timestamps, so two runs of the same config on the same inputs write identical files.
Print the record of any artifact with ``python -m mva_core.provenance <path>``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mva_core.artifacts import PROVENANCE_FILE, config_hash, file_sha256, library_versions, read_provenance
from mva_core.markdown import to_markdown
from mva_core.precision import job_precision


def path_digest(path: str | Path) -> str:
    """sha256 of a file, or of a directory's sorted ``relative path + file sha256`` lines (its provenance record
    excluded, so the digest covers content only)."""
    target = Path(path)
    if not target.is_dir():
        return file_sha256(target)
    lines = [f"{p.relative_to(target).as_posix()}\t{file_sha256(p)}"
             for p in sorted(target.rglob("*")) if p.is_file() and p.name != PROVENANCE_FILE]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def job_record(rule: str, wildcards: Mapping[str, str], config: Mapping[str, Any], params: Mapping[str, Any],
               inputs: Iterable[str]) -> dict:
    """The provenance record of one workflow job."""
    wildcards = dict(wildcards)
    return {
        "rule": rule,
        "wildcards": wildcards,
        "seed": int(wildcards["seed"]) if "seed" in wildcards else config.get("seed"),
        "config_hash": config_hash(config),
        "params_hash": config_hash(params),
        "inputs": {str(path): path_digest(path) for path in sorted(set(inputs))},
        "library_versions": library_versions(),
        "compute": job_precision(config).describe(),
    }


def snakemake_record(job: Any) -> dict:
    """``job_record`` for the ``snakemake`` object a workflow script receives."""
    return job_record(job.rule, dict(job.wildcards.items()), job.config, dict(job.params.items()), list(job.input))


def source_hashes(paths: Iterable[str], roots: Iterable[str | Path]) -> dict[str, str]:
    """Configured data source -> sha256 of the local file it resolves to (``hub`` for hub datasets)."""
    from mva_core.data import resolve_source

    hashes = {}
    for path in paths:
        resolved = resolve_source(path, list(roots))
        hashes[path] = "hub" if isinstance(resolved, str) else file_sha256(resolved)
    return hashes


def data_source_hashes(records: Iterable[Mapping[str, Any] | None]) -> dict[str, str]:
    """Raw data file -> sha256, gathered from the records of data-preparation artifacts."""
    hashes: dict[str, str] = {}
    for record in records:
        hashes.update((record or {}).get("data_sources", {}))
    return dict(sorted(hashes.items()))


def provenance_markdown(record: Mapping[str, Any], data_records: Iterable[Mapping[str, Any] | None]) -> str:
    """Markdown section for summary.md: config hash, seed, library versions and raw data hashes."""
    lines = ["## Provenance", "",
             f"Config hash `{record['config_hash']}`, seed {record['seed']}. Every Parquet file of the run carries its "
             "job's record (rule, seed, config and settings hashes, input sha256, library versions) in its footer, "
             "every model/adapter directory in provenance.json; print one with `python -m mva_core.provenance <path>`.",
             ""]
    libraries = pd.DataFrame(list(record["library_versions"].items()), columns=["library", "version"])
    sources = pd.DataFrame([(path, f"`{digest}`") for path, digest in data_source_hashes(data_records).items()],
                           columns=["data source", "sha256"])
    return "\n".join(lines) + "\n" + to_markdown(libraries) + "\n" + to_markdown(sources)


def main(paths: list[str]) -> int:
    for path in paths:
        print(f"{path}:\n{json.dumps(read_provenance(path), indent=2, sort_keys=True)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
