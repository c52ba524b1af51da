"""Snakemake entry point: download one data file from its pinned URL and verify its sha256."""
from mva_core.fetch import DataFile, fetch
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    path = snakemake.wildcards.path
    root = snakemake.output[0][: -len(path)].rstrip("/") or "."
    fetch(DataFile(path, snakemake.params.url, snakemake.params.sha256), root)
    print(f"{snakemake.output[0]}: downloaded from {snakemake.params.url}, sha256 ok")
