# Preference data: download files found under no data root (pinned URLs with verified sha256, or files of a Hugging
# Face repository at a pinned commit, mva_core.fetch), load each value's sources, drop bad rows (counted), split by
# prompt hash.
import dataclasses
import re


rule fetch_data:
    output:
        f"{DATA_ROOT}/{{path}}",
    wildcard_constraints:
        path="|".join(re.escape(p) for p in DOWNLOADS) or "(?!)",
    params:
        entry=lambda wc: dataclasses.asdict(DOWNLOADS[wc.path]),
    log:
        log_path("fetch_data", "{path}"),
    benchmark:
        benchmark_path("fetch_data", "{path}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=1000,
        runtime=30,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/fetch_data.py"


rule prepare_value_data:
    input:
        data=lambda wc: local_data_files(config["values"][wc.value]["sources"]),
    output:
        splits=expand(f"{RUN}/data/{{{{value}}}}/{{split}}.parquet", split=SPLITS),
        summary=f"{RUN}/data/{{value}}/summary.parquet",
    params:
        sources=lambda wc: config["values"][wc.value]["sources"],
        split=config["data"]["split"],
        max_pairs=config["data"]["max_pairs"],
        on_bad_row=config["data"]["on_bad_row"],
        roots=config["data_roots"],
        salt=str(config["seed"]),
    log:
        log_path("prepare_value_data", "{value}"),
    benchmark:
        benchmark_path("prepare_value_data", "{value}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=20,
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/prepare_value_data.py"


rule data_summary:
    input:
        expand(f"{RUN}/data/{{value}}/summary.parquet", value=VALUES),
    output:
        table=f"{RUN}/data/summary.parquet",
        markdown=f"{RUN}/data/summary.md",
    log:
        log_path("data_summary"),
    benchmark:
        benchmark_path("data_summary")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/data_summary.py"
