"""Snakemake entry point: the prompts every model answers (eval splits and/or external prompt sets)."""
import pandas as pd

from mva_core.artifacts import current_provenance, write_parquet
from mva_core.grid import evaluation_prompts, load_prompt_set
from mva_core.provenance import source_hashes
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    splits = {value: pd.read_parquet(path) for value, path in zip(snakemake.params.values, snakemake.input.splits)}
    params = snakemake.params
    prompt_sets = [load_prompt_set(entry, params.roots, params.on_bad_row) for entry in params.prompt_sources]
    for prompt_set in prompt_sets:
        print(f"prompt source {prompt_set.name!r}: {len(prompt_set.prompts)} prompts "
              f"({prompt_set.prompts.attrs['rows_read']} rows read, dropped {prompt_set.prompts.attrs['drops']})")
    current_provenance()["data_sources"] = source_hashes([e["path"] for e in params.prompt_sources], params.roots)
    write_parquet(evaluation_prompts(splits, params.per_value, prompt_sets, params.seed, params.max_words), snakemake.output[0])
