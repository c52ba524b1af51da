# Reward models: one per value, trained by the pipeline (source: train) or taken from the hub / a local dir.
# Accuracy is measured on the value's eval pairs, which no reward model was trained on.


rule train_reward_model:
    input:
        base=f"{RUN}/models/base",
        pairs=f"{RUN}/data/{{value}}/rm_train.parquet",
    output:
        directory(f"{RUN}/reward_models/{{value}}"),
    params:
        settings=lambda wc: config["values"][wc.value]["reward_model"],
        checkpoint_dir=checkpoint_path("train_reward_model", "{value}"),
        tracking_dir=tracking_path("train_reward_model", "{value}"),
    threads: heavy_threads
    log:
        log_path("train_reward_model", "{value}"),
    benchmark:
        benchmark_path("train_reward_model", "{value}")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=rule_runtime("train_reward_model", 240),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/train_reward_model.py"


rule reward_model_accuracy:
    input:
        unpack(reward_model_input),
        pairs=f"{RUN}/data/{{value}}/eval.parquet",
    output:
        f"{RUN}/reward_models/accuracy_{{value}}.json",
    params:
        settings=lambda wc: config["values"][wc.value]["reward_model"],
        location=lambda wc: reward_model_location(wc.value),
    threads: heavy_threads
    log:
        log_path("reward_model_accuracy", "{value}"),
    benchmark:
        benchmark_path("reward_model_accuracy", "{value}")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=rule_runtime("reward_model_accuracy", 60),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/reward_model_accuracy.py"
