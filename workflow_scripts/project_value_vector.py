"""Snakemake entry point: a later value's vector projected off the earlier values' vectors' spaces."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.derived_vectors import write_projection

    earlier = dict(zip(snakemake.params.earlier, snakemake.input.earlier, strict=True))
    write_projection(snakemake.input.source, earlier, snakemake.output[0], snakemake.params.sides)
