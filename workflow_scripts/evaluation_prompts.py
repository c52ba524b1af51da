"""Snakemake entry point: the prompts every model answers (eval splits and/or external prompt sets)."""
from mva_core.artifacts import current_provenance
from mva_core.contracts import EVALUATION_PROMPTS, PAIRS, read_table, write_table
from mva_core.data import evaluation_prompts, load_prompt_set
from mva_core.provenance import source_hashes
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    splits = {value: read_table(path, PAIRS) for value, path in zip(snakemake.params.values, snakemake.input.splits)}
    params = snakemake.params
    prompt_sets = [load_prompt_set(entry, params.roots, params.on_bad_row) for entry in params.prompt_sources]
    for prompt_set in prompt_sets:
        print(f"prompt source {prompt_set.name!r}: {len(prompt_set.prompts)} prompts "
              f"({prompt_set.prompts.attrs['rows_read']} rows read, dropped {prompt_set.prompts.attrs['drops']})")
    current_provenance()["data_sources"] = source_hashes([e["path"] for e in params.prompt_sources], params.roots)
    prompts = evaluation_prompts(splits, params.per_value, prompt_sets, params.seed, params.max_words)
    write_table(prompts, snakemake.output[0], EVALUATION_PROMPTS)
