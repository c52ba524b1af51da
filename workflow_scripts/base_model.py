"""Snakemake entry point: materialise the base model as a safetensors model directory."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.base_model import BaseModelSettings, prepare_base_model
    from mva_core.precision import with_job_dtype

    prepare_base_model(BaseModelSettings(**with_job_dtype(snakemake.params.settings, snakemake.config)),
                       snakemake.output[0])
