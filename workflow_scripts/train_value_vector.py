"""Snakemake entry point: train one value vector (DPO LoRA + decorrelation penalty against earlier vectors)."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.contracts import PAIRS, read_table
    from mva_core.penalties import PenaltySettings
    from mva_core.precision import job_precision
    from mva_core.value_training import DPOSettings, LoraSettings, derive_seed, train_value_vector

    lora = dict(snakemake.params.lora)
    lora["target_modules"] = tuple(lora["target_modules"])
    dpo = DPOSettings(**snakemake.params.dpo)
    train_value_vector(
        snakemake.input.policy,
        read_table(snakemake.input.pairs, PAIRS),
        snakemake.output[0],
        frozen_vectors={value: snakemake.input[value] for value in snakemake.params.frozen},
        lora=LoraSettings(**lora),
        dpo=dpo,
        penalty=PenaltySettings(**snakemake.params.penalty),
        checkpoint_dir=snakemake.params.checkpoint_dir,
        threads=snakemake.threads,
        tracking=snakemake.config["tracking"],
        tracking_dir=snakemake.params.tracking_dir,
        precision=job_precision(snakemake.config),
        # (seed, "value", value): the same in every chain of this value; a replicate's adds its own names
        init_seed=derive_seed(dpo.seed, *snakemake.params.init_seed_names),
    )
