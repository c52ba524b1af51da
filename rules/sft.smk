# Supervised fine-tuning on the chosen replies of every value's DPO split (skipped when sft.enabled is false).


rule sft:
    input:
        base=f"{RUN}/models/base",
        pairs=expand(f"{RUN}/data/{{value}}/dpo_train.parquet", value=VALUES),
    output:
        directory(f"{RUN}/models/sft"),
    params:
        settings={k: v for k, v in config["sft"].items() if k not in ("enabled", "max_pairs")},
        max_pairs=config["sft"]["max_pairs"],
        checkpoint_dir=checkpoint_path("sft"),
        tracking_dir=tracking_path("sft"),
    threads: heavy_threads
    log:
        log_path("sft"),
    benchmark:
        benchmark_path("sft")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=rule_runtime("sft", 240),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/sft.py"
