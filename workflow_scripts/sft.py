"""Snakemake entry point: SFT of the base model on the chosen replies of every value's DPO split."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    import pandas as pd

    from mva_core.contracts import PAIRS, read_table
    from mva_core.precision import job_precision
    from mva_core.sft import SFTSettings, run_sft

    settings = dict(snakemake.params.settings)
    settings["target_modules"] = tuple(settings["target_modules"])
    cap = snakemake.params.max_pairs
    pairs = pd.concat([read_table(path, PAIRS).head(cap) for path in snakemake.input.pairs], ignore_index=True)
    run_sft(
        snakemake.input.base,
        pairs,
        snakemake.output[0],
        SFTSettings(**settings),
        checkpoint_dir=snakemake.params.checkpoint_dir,
        threads=snakemake.threads,
        tracking=snakemake.config["tracking"],
        tracking_dir=snakemake.params.tracking_dir,
        precision=job_precision(snakemake.config),
    )
