"""Snakemake entry point: score one method's generations with one value's reward model (batched, cached)."""
import shutil

from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    import torch

    from mva_core.contracts import EVALUATION_PROMPTS, GENERATIONS, SCORES, read_table, write_table
    from mva_core.precision import with_job_dtype
    from mva_core.reward_models import RewardModelSettings, RewardScorer, score_generations

    torch.set_num_threads(snakemake.threads)
    settings = RewardModelSettings(**with_job_dtype(snakemake.params.settings, snakemake.config))
    scorer = RewardScorer.load(snakemake.params.location, settings)
    scores = score_generations(
        scorer,
        read_table(snakemake.input.generations, GENERATIONS),
        read_table(snakemake.input.prompts, EVALUATION_PROMPTS),
        snakemake.wildcards.value,
        shard_dir=snakemake.params.shard_dir,
    )
    description = scorer.describe()
    scores = scores.assign(seed=int(snakemake.wildcards.seed), rm_batch_size=description["batch_size"],
                           rm_dtype=description["dtype"])
    write_table(scores, snakemake.output[0], SCORES)
    shutil.rmtree(snakemake.params.shard_dir, ignore_errors=True)
