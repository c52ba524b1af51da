"""Snakemake entry point: the config the run used, recorded in the run (``mva_core.run_config``)."""
from mva_core.artifacts import write_text
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    write_text(snakemake.params.text, snakemake.output[0])
