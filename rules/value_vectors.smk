# Value vectors: one DPO LoRA per value, trained in order; every value after the first in a penalised chain adds
# alpha * penalty(new adapter, earlier frozen adapters). Projected and planted vectors are computed from trained ones
# without training. Decorrelation tables measure the result.


rule train_value_vector:
    input:
        unpack(frozen_vector_dirs),
        policy=policy_base_dir(),
        pairs=f"{RUN}/data/{{value}}/dpo_train.parquet",
    output:
        directory(f"{SEED_RUN}/value_vectors/{{chain}}/{{value}}"),
    params:
        lora=config["lora"],
        dpo=lambda wc: value_dpo(wc.value, wc),
        penalty=lambda wc: dict(PLAN.vector_job(wc.chain, wc.value).penalty),
        frozen=lambda wc: PLAN.vector_job(wc.chain, wc.value).frozen_values,
        init_seed_names=lambda wc: PLAN.vector_job(wc.chain, wc.value).init_seed_names,
        checkpoint_dir=checkpoint_path("train_value_vector", "seed{seed}", "{chain}", "{value}"),
        tracking_dir=tracking_path("train_value_vector", "seed{seed}", "{chain}", "{value}"),
    threads: heavy_threads
    log:
        log_path("train_value_vector", "seed{seed}", "{chain}", "{value}"),
    benchmark:
        benchmark_path("train_value_vector", "seed{seed}", "{chain}", "{value}")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=rule_runtime("train_value_vector", 480),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/train_value_vector.py"


# A later value's vector projected off the earlier values' spaces (a decorrelation baseline without retraining).
rule project_value_vector:
    input:
        unpack(lambda wc: derived_vector_inputs(PLAN.projection_job(wc.method, wc.value), wc.seed)),
    output:
        directory(f"{SEED_RUN}/projected_vectors/{{method}}/{{value}}"),
    params:
        earlier=lambda wc: list(PLAN.projection_job(wc.method, wc.value).earlier),
        sides=lambda wc: PLAN.projection_job(wc.method, wc.value).sides,
    log:
        log_path("project_value_vector", "seed{seed}", "{method}", "{value}"),
    benchmark:
        benchmark_path("project_value_vector", "seed{seed}", "{method}", "{value}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/project_value_vector.py"


# A later value's vector minus c times the earlier values' (the planted-interference control), as one exact LoRA.
rule plant_value_vector:
    input:
        unpack(lambda wc: derived_vector_inputs(PLAN.planted_job(wc.method, wc.value), wc.seed)),
    output:
        directory(f"{SEED_RUN}/planted_vectors/{{method}}/{{value}}"),
    params:
        earlier=lambda wc: list(PLAN.planted_job(wc.method, wc.value).earlier),
        c=lambda wc: PLAN.planted_job(wc.method, wc.value).c,
    log:
        log_path("plant_value_vector", "seed{seed}", "{method}", "{value}"),
    benchmark:
        benchmark_path("plant_value_vector", "seed{seed}", "{method}", "{value}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/plant_value_vector.py"


# One table per vector set (``independent``, a penalised or replicate method's chain, or a projected or planted
# method's vectors), shared by every method evaluated with it.
rule decorrelation_table:
    input:
        unpack(lambda wc: {v: seed_path(path, wc.seed) for v, path in PLAN.vector_set_dirs(wc.vector_set).items()}),
    output:
        table=f"{SEED_RUN}/decorrelation/{{vector_set}}.parquet",
    params:
        values=VALUES,
    log:
        log_path("decorrelation_table", "seed{seed}", "{vector_set}"),
    benchmark:
        benchmark_path("decorrelation_table", "seed{seed}", "{vector_set}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=20,
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/decorrelation_table.py"


rule train_modpo_vector:
    input:
        unpack(lambda wc: {job.value: seed_path(job.path, wc.seed) for job in PLAN[wc.method].vector_jobs()}),
        policy=policy_base_dir(),
        pairs=lambda wc: f"{RUN}/data/{modpo_job(wc).target}/dpo_train.parquet",
    output:
        directory(f"{SEED_RUN}/modpo_vectors/{{method}}/w{{index}}"),
    params:
        lora=config["lora"],
        dpo=lambda wc: value_dpo(modpo_job(wc).target, wc),
        weighting=lambda wc: dict(modpo_job(wc).weighting),
        target=lambda wc: modpo_job(wc).target,
        checkpoint_dir=checkpoint_path("train_modpo_vector", "seed{seed}", "{method}", "w{index}"),
        tracking_dir=tracking_path("train_modpo_vector", "seed{seed}", "{method}", "w{index}"),
    threads: heavy_threads
    log:
        log_path("train_modpo_vector", "seed{seed}", "{method}", "w{index}"),
    benchmark:
        benchmark_path("train_modpo_vector", "seed{seed}", "{method}", "w{index}")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=rule_runtime("train_modpo_vector", 480),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/train_modpo_vector.py"
