"""Snakemake entry point: fetch one data file of the data manifest (a pinned URL or a file of a Hugging Face
repository at a pinned commit) into the first data root, verified against its sha256 where it has one."""
from mva_core.fetch import DataFile, fetch
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    entry = DataFile(**snakemake.params.entry)
    root = snakemake.output[0][: -len(entry.path)].rstrip("/") or "."
    fetch(entry, root)
    print(f"{snakemake.output[0]}: fetched from {entry.origin}")
