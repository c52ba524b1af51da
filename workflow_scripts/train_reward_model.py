"""Snakemake entry point: train one value's reward model on its rm_train split."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.contracts import PAIRS, read_table
    from mva_core.precision import with_job_dtype
    from mva_core.reward_models import RewardModelSettings, train_reward_model

    train_reward_model(
        snakemake.input.base,
        read_table(snakemake.input.pairs, PAIRS),
        snakemake.output[0],
        RewardModelSettings(**with_job_dtype(snakemake.params.settings, snakemake.config)),
        checkpoint_dir=snakemake.params.checkpoint_dir,
        threads=snakemake.threads,
        tracking=snakemake.config["tracking"],
        tracking_dir=snakemake.params.tracking_dir,
    )
