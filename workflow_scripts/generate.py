"""Snakemake entry point: one model load, one part of a method's grid points × prompts (every parts-th row of the
queue; all of them with one part), batched generation. Points that are an earlier method's models
(params.borrowed, mva_core.shared_points) are left to merge_generations, which copies them."""
import shutil

from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mva_core.combine import ValueMixer
    from mva_core.contracts import EVALUATION_PROMPTS, GENERATIONS, POINTS, read_table, write_table
    from mva_core.generation import RESULT_COLUMNS, GenerationSettings, generate_grid
    from mva_core.methods import method_class
    from mva_core.precision import job_precision

    precision = job_precision(snakemake.config)
    points = read_table(snakemake.input.points, POINTS)
    points = points[~points["point_id"].astype(str).isin(snakemake.params.borrowed)]
    if points.empty:  # every point is an earlier method's model
        generations = pd.DataFrame({column: [] for column in RESULT_COLUMNS})
    else:
        torch.set_num_threads(snakemake.threads)
        tokenizer = AutoTokenizer.from_pretrained(snakemake.input.policy)
        model = AutoModelForCausalLM.from_pretrained(snakemake.input.policy, **precision.model_kwargs()).to(precision.device)
        mixer = ValueMixer.attach(model, {name: snakemake.input[name] for name in snakemake.params.adapters})
        generations = generate_grid(
            model,
            tokenizer,
            mixer,
            read_table(snakemake.input.prompts, EVALUATION_PROMPTS),
            method_class(snakemake.params.method_type).mixer_lambdas(points),
            GenerationSettings(**snakemake.params.generation),
            shard_dir=snakemake.params.shard_dir,
            part=snakemake.params.part,
            parts=snakemake.params.parts,
        )
    write_table(generations.assign(method=snakemake.wildcards.method, dtype=precision.dtype), snakemake.output[0], GENERATIONS)
    shutil.rmtree(snakemake.params.shard_dir, ignore_errors=True)
