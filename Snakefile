# MVA: multi-value alignment via value decorrelation (HSIC) and extrapolation, end to end.
#   snakemake --cores 2                                  # embedded default (config.yaml)
#   snakemake --cores 2 --configfile config/smoke.yaml   # tiny smoke run
# Stages: data -> base model -> SFT -> value vectors (DPO + decorrelation penalty) -> reward models ->
# lambda-grid generation -> scoring -> held-out selection, paired comparisons, frontiers, win rates -> figures,
# summary.md, report.

# config.yaml is the default run, not a base layer: it applies only when no --configfile is given, so a config file
# stands alone (its values and methods are all there is); several --configfile files still merge in order.
if not workflow.overwrite_configfiles:
    workflow.configfile(f"{workflow.basedir}/config.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base_model.smk"
include: "rules/sft.smk"
include: "rules/value_vectors.smk"
include: "rules/reward_models.smk"
include: "rules/evaluation.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        f"{RUN}/data/summary.parquet",
        value_vector_dirs(),
        expand(f"{SEED_RUN}/decorrelation/{{chain}}.parquet", seed=SEEDS, chain=VECTOR_SETS),
        rules.frontiers.output,
        rules.figures.output,
        rules.run_config.output,
