# Value vectors: one DPO LoRA per value, trained in order; every value after the first in a penalised chain adds
# alpha * penalty(new adapter, earlier frozen adapters). Decorrelation tables measure the result.


rule train_value_vector:
    input:
        unpack(frozen_vector_dirs),
        policy=policy_base_dir(),
        pairs=f"{RUN}/data/{{value}}/dpo_train.parquet",
    output:
        directory(f"{RUN}/value_vectors/{{chain}}/{{value}}"),
    params:
        lora=config["lora"],
        dpo=config["dpo"],
        penalty=lambda wc: chain_penalty(config, wc.chain),
        frozen=lambda wc: vector_job(config, wc.chain, wc.value).frozen_values,
        checkpoint_dir=f"{RUN}/checkpoints/value_vectors/{{chain}}/{{value}}",
    threads: max(1, workflow.cores)
    log:
        log_path("train_value_vector", "{chain}_{value}"),
    benchmark:
        f"{RUN}/benchmarks/train_value_vector/{{chain}}_{{value}}.tsv"
    resources:
        mem_mb=16000,
        runtime=480,
    script:
        "../workflow_scripts/train_value_vector.py"


rule decorrelation_table:
    input:
        unpack(lambda wc: {v: vector_dir(wc.method, v) for v in VALUES}),
    output:
        table=f"{RUN}/decorrelation/{{method}}.parquet",
    params:
        values=VALUES,
        penalty=lambda wc: config["methods"][wc.method]["penalty"],
    log:
        log_path("decorrelation_table", "{method}"),
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow_scripts/decorrelation_table.py"
