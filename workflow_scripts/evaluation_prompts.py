"""Snakemake entry point: the held-out prompts every model answers."""
import pandas as pd

from mva_core.artifacts import write_parquet
from mva_core.grid import evaluation_prompts
from mva_core.workflow_io import logged_job

with logged_job(snakemake.log[0]):
    splits = {value: pd.read_parquet(path) for value, path in zip(snakemake.params.values, snakemake.input)}
    write_parquet(evaluation_prompts(splits, snakemake.params.per_value), snakemake.output[0])
