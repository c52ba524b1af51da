"""Snakemake entry point: pairwise accuracy of one value's reward model on held-out eval pairs."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    import torch

    from mva_core.artifacts import current_provenance, write_json
    from mva_core.contracts import PAIRS, read_table
    from mva_core.precision import with_job_dtype
    from mva_core.reward_models import RewardModelSettings, RewardScorer, pairwise_accuracy

    torch.set_num_threads(snakemake.threads)
    settings = RewardModelSettings(**with_job_dtype(snakemake.params.settings, snakemake.config))
    scorer = RewardScorer.load(snakemake.params.location, settings)
    result = pairwise_accuracy(scorer, read_table(snakemake.input.pairs, PAIRS))
    write_json({"value": snakemake.wildcards.value, **result, "scorer": scorer.describe(),
                "provenance": current_provenance()}, snakemake.output[0])
