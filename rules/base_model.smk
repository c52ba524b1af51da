# The base model, converted once into a plain safetensors model directory.


rule base_model:
    output:
        directory(f"{RUN}/models/base"),
    params:
        settings=config["base_model"],
    log:
        log_path("base_model"),
    benchmark:
        benchmark_path("base_model")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=rule_runtime("base_model", 30),
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/base_model.py"
