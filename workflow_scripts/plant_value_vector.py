"""Snakemake entry point: a later value's vector minus c times the earlier values' vectors (planted interference)."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.derived_vectors import write_planted

    earlier = dict(zip(snakemake.params.earlier, snakemake.input.earlier, strict=True))
    write_planted(snakemake.input.source, earlier, snakemake.output[0], snakemake.params.c)
