"""Snakemake entry point: HSIC (σ = 1 and median, A rows and ΔW rows) and ΔW cosine between one method's value vectors."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.artifacts import write_parquet
    from mva_core.decorrelation import decorrelation_table

    adapters = {value: snakemake.input[value] for value in snakemake.params.values}
    table = decorrelation_table(adapters)
    write_parquet(table, snakemake.output.table)
