"""Snakemake entry point: the prompts every model answers (eval splits and/or external prompt sets), each checked
against the policy's context (with max_new_tokens), and the generations they make checked against the ceiling."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake) as log:
    from transformers import AutoTokenizer

    from mva_core.artifacts import current_provenance
    from mva_core.contracts import EVALUATION_PROMPTS, PAIRS, read_table, write_table
    from mva_core.data import ContextBudget, evaluation_prompts, load_prompt_set
    from mva_core.generation import encode_prompt
    from mva_core.provenance import source_hashes
    from mva_core.workload import check_max_new_tokens, evaluation_workload, policy_positions

    splits = {value: read_table(path, PAIRS) for value, path in zip(snakemake.params.values, snakemake.input.splits)}
    params = snakemake.params
    prompt_sets = [load_prompt_set(entry, params.roots, params.on_bad_row) for entry in params.prompt_sources]
    for prompt_set in prompt_sets:
        print(f"prompt source {prompt_set.name!r}: {len(prompt_set.prompts)} prompts "
              f"({prompt_set.prompts.attrs['rows_read']} rows read, dropped {prompt_set.prompts.attrs['drops']})")
    current_provenance()["data_sources"] = source_hashes([e["path"] for e in params.prompt_sources], params.roots)
    positions = policy_positions(snakemake.input.model)
    budget = None
    if positions is None:
        log.warning("the policy's config.json names no context length: prompt lengths are not checked")
    else:
        check_max_new_tokens(params.max_new_tokens, positions, snakemake.input.model)
        tokenizer = AutoTokenizer.from_pretrained(snakemake.input.model)
        budget = ContextBudget(positions, params.max_new_tokens, lambda messages: len(encode_prompt(tokenizer, messages)),
                               params.on_long_prompt)
    prompts = evaluation_prompts(splits, params.per_value, prompt_sets, params.seed, params.max_words, budget)
    too_long = prompts.attrs["too_long"]
    current_provenance()["context_check"] = {"positions": positions, "max_new_tokens": params.max_new_tokens,
                                             "on_long_prompt": params.on_long_prompt, "too_long": too_long}
    if budget is not None:
        log.info("%d prompts; %d skipped as longer than %s: %s", len(prompts), sum(too_long.values()),
                 budget.describe(), too_long)
    # the ceiling again, with the prompts found (a source with n: null is counted only here); read from the config,
    # not params, so that adding a method does not redo this job and every generation after it
    evaluation_workload(snakemake.config).check(snakemake.config["evaluation"]["max_generations_per_seed"], len(prompts))
    write_table(prompts, snakemake.output[0], EVALUATION_PROMPTS)
