"""Snakemake entry point: HSIC and cosine similarity between one method's value vectors, per module and pair."""
from mva_core.artifacts import write_parquet
from mva_core.decorrelation import decorrelation_table
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    penalty = snakemake.params.penalty
    sigma = penalty.get("sigma", 1.0)
    adapters = {value: snakemake.input[value] for value in snakemake.params.values}
    table = decorrelation_table(adapters, sigma=sigma, normalization=penalty.get("normalization", "n2"))
    write_parquet(table, snakemake.output.table)
