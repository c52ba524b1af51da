# Value vectors: one DPO LoRA per value, trained in order; every value after the first in a penalised chain adds
# alpha * penalty(new adapter, earlier frozen adapters). Decorrelation tables measure the result.


rule train_value_vector:
    input:
        unpack(frozen_vector_dirs),
        policy=policy_base_dir(),
        pairs=f"{RUN}/data/{{value}}/dpo_train.parquet",
    output:
        directory(f"{SEED_RUN}/value_vectors/{{chain}}/{{value}}"),
    params:
        lora=config["lora"],
        dpo=lambda wc: seeded("dpo", wc),
        penalty=lambda wc: chain_penalty(config, wc.chain),
        frozen=lambda wc: vector_job(config, wc.chain, wc.value).frozen_values,
        checkpoint_dir=f"{SEED_RUN}/checkpoints/value_vectors/{{chain}}/{{value}}",
    threads: heavy_threads
    log:
        log_path("train_value_vector", "seed{seed}_{chain}_{value}"),
    benchmark:
        f"{RUN}/benchmarks/train_value_vector/seed{{seed}}_{{chain}}_{{value}}.tsv"
    resources:
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=480,
        gpu=config["compute"]["gpus_per_job"],
    script:
        "../workflow_scripts/train_value_vector.py"


rule decorrelation_table:
    input:
        unpack(lambda wc: {v: vector_dir(wc.method, v, wc.seed) for v in VALUES}),
    output:
        table=f"{SEED_RUN}/decorrelation/{{method}}.parquet",
    params:
        values=VALUES,
        penalty=lambda wc: config["methods"][wc.method]["penalty"],
    log:
        log_path("decorrelation_table", "seed{seed}_{method}"),
    benchmark:
        benchmark_path("decorrelation_table", "seed{seed}_{method}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow_scripts/decorrelation_table.py"


rule train_modpo_vector:
    input:
        unpack(
            lambda wc: {v: vector_dir(wc.method, v, wc.seed) for v in VALUES if v != modpo_target(config, wc.method)}
        ),
        policy=policy_base_dir(),
        pairs=lambda wc: f"{RUN}/data/{modpo_target(config, wc.method)}/dpo_train.parquet",
    output:
        directory(f"{SEED_RUN}/modpo_vectors/{{method}}/w{{index}}"),
    params:
        lora=config["lora"],
        dpo=lambda wc: seeded("dpo", wc),
        weighting=lambda wc: dict(zip(VALUES, WEIGHTINGS[int(wc.index)])),
        target=lambda wc: modpo_target(config, wc.method),
        checkpoint_dir=f"{SEED_RUN}/checkpoints/modpo_vectors/{{method}}/w{{index}}",
    threads: heavy_threads
    log:
        log_path("train_modpo_vector", "seed{seed}_{method}_w{index}"),
    benchmark:
        f"{RUN}/benchmarks/train_modpo_vector/seed{{seed}}_{{method}}_w{{index}}.tsv"
    resources:
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=480,
        gpu=config["compute"]["gpus_per_job"],
    script:
        "../workflow_scripts/train_modpo_vector.py"
