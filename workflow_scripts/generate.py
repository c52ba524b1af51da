"""Snakemake entry point: one model load, all of a method's grid points, batched generation."""
import shutil

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mva_core.artifacts import write_parquet
from mva_core.combine import ValueMixer
from mva_core.generation import GenerationSettings, generate_grid
from mva_core.grid import mixer_lambdas
from mva_core.precision import job_precision
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    torch.set_num_threads(snakemake.threads)
    precision = job_precision(snakemake.config)
    tokenizer = AutoTokenizer.from_pretrained(snakemake.input.policy)
    model = AutoModelForCausalLM.from_pretrained(snakemake.input.policy, **precision.model_kwargs()).to(precision.device)
    mixer = ValueMixer.attach(model, {name: snakemake.input[name] for name in snakemake.params.adapters})
    generations = generate_grid(
        model,
        tokenizer,
        mixer,
        pd.read_parquet(snakemake.input.prompts),
        mixer_lambdas(pd.read_parquet(snakemake.input.points)),
        GenerationSettings(**snakemake.params.generation),
        shard_dir=snakemake.params.shard_dir,
    )
    write_parquet(generations.assign(method=snakemake.wildcards.method, dtype=precision.dtype), snakemake.output[0])
    shutil.rmtree(snakemake.params.shard_dir, ignore_errors=True)
