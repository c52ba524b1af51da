# Evaluation: held-out prompts (eval splits and/or evaluation.prompt_sources) -> evaluation.generation.jobs
# generation jobs per method (each every jobs-th row of all grid points, one model load), merged -> one scoring job
# per method and value -> held-out selection, frontiers, paired comparisons and win rates (tables/).
# Their outputs are flagged update(): a failed rerun keeps the previous run's files (mva_core.kept_outputs).

from mva_core.reporting import MARKDOWN_TABLES, TABLE_FILES as TABLES  # tables/<file>.parquet of the frontiers rule

# Penalty-free baselines whose interference and held-out rewards every other method is compared with.
INTERFERENCE_BASELINES = PLAN.baselines
GENERATION = config["evaluation"]["generation"]
GENERATION_PARTS = range(GENERATION["jobs"])  # the {part} of each generate job of a method and seed


rule evaluation_prompts:
    input:
        splits=expand(f"{RUN}/data/{{value}}/eval.parquet", value=VALUES) if config["evaluation"]["prompts_per_value"] else [],
        data=local_data_files(config["evaluation"]["prompt_sources"]),
        model=f"{RUN}/models/base",  # the policy's tokenizer and context length (SFT keeps both)
    output:
        update(f"{RUN}/evaluation/prompts.parquet"),
    params:
        values=VALUES,
        per_value=config["evaluation"]["prompts_per_value"],
        max_words=config["evaluation"]["max_prompt_words"],
        prompt_sources=config["evaluation"]["prompt_sources"],
        roots=config["data_roots"],
        on_bad_row=config["data"]["on_bad_row"],
        seed=config["seed"],
        max_new_tokens=config["evaluation"]["generation"]["max_new_tokens"],
        on_long_prompt=config["evaluation"]["on_long_prompt"],
    log:
        log_path("evaluation_prompts"),
    benchmark:
        benchmark_path("evaluation_prompts")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/evaluation_prompts.py"


rule grid_points:
    output:
        f"{RUN}/evaluation/{{method}}/points.parquet",
    params:
        method=lambda wc: config["methods"][wc.method],
        grid=PLAN.grid,
        weightings=WEIGHTINGS,
        values=VALUES,
        seed=config["seed"],
    log:
        log_path("grid_points", "{method}"),
    benchmark:
        benchmark_path("grid_points", "{method}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=1000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/grid_points.py"


rule generate:
    input:
        unpack(method_adapters),
        policy=policy_base_dir(),
        prompts=f"{RUN}/evaluation/prompts.parquet",
        points=f"{RUN}/evaluation/{{method}}/points.parquet",
    output:
        # kept (not temp): a method that copies an earlier method's points (BORROWED) remerges when that method's
        # table is rewritten, without generating its own parts again
        f"{SEED_RUN}/evaluation/{{method}}/generation_parts/{{part}}.parquet",
    params:
        adapters=lambda wc: list(method_adapters(wc)),
        method_type=lambda wc: PLAN[wc.method].type,
        generation={**{key: value for key, value in GENERATION.items() if key != "jobs"},
                    "stop_strings": stop_strings(config["base_model"]["prompt_format"])},
        part=lambda wc: int(wc.part),
        parts=GENERATION["jobs"],
        borrowed=lambda wc: sorted(BORROWED[wc.method]),  # points merge_generations copies instead
        shard_dir=checkpoint_path("generate", "seed{seed}", "{method}", "part{part}"),
    threads: heavy_threads
    log:
        log_path("generate", "seed{seed}", "{method}", "part{part}"),
    benchmark:
        benchmark_path("generate", "seed{seed}", "{method}", "part{part}")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: config["compute"]["mem_mb"] * attempt,
        runtime=rule_runtime("generate", 480),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/generate.py"


rule merge_generations:
    input:
        parts=lambda wc: [seed_path(f"evaluation/{wc.method}/generation_parts/{part}.parquet", wc.seed)
                          for part in GENERATION_PARTS],
        borrowed=borrowed_generations,
        prompts=f"{RUN}/evaluation/prompts.parquet",
        points=f"{RUN}/evaluation/{{method}}/points.parquet",
    output:
        update(f"{SEED_RUN}/evaluation/{{method}}/generations.parquet"),
    params:
        samples_per_prompt=GENERATION["samples_per_prompt"],
        borrowed=lambda wc: BORROWED[wc.method],
    log:
        log_path("merge_generations", "seed{seed}", "{method}"),
    benchmark:
        benchmark_path("merge_generations", "seed{seed}", "{method}")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/merge_generations.py"


rule score:
    input:
        unpack(reward_model_input),
        generations=f"{SEED_RUN}/evaluation/{{method}}/generations.parquet",
        prompts=f"{RUN}/evaluation/prompts.parquet",
    output:
        update(f"{SEED_RUN}/evaluation/{{method}}/scores_{{value}}.parquet"),
    params:
        settings=lambda wc: config["values"][wc.value]["reward_model"],
        location=lambda wc: reward_model_location(wc.value),
        shard_dir=checkpoint_path("score", "seed{seed}", "{method}", "{value}"),
    threads: heavy_threads
    log:
        log_path("score", "seed{seed}", "{method}", "{value}"),
    benchmark:
        benchmark_path("score", "seed{seed}", "{method}", "{value}")
    resources:
        attempt=job_attempt,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=rule_runtime("score", 240),
        gpu=config["compute"]["gpus_per_job"],
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/score.py"


rule frontiers:
    input:
        scores=expand(
            f"{RUN}/seed_{{seed}}/evaluation/{{method}}/scores_{{value}}.parquet", seed=SEEDS, method=METHODS, value=VALUES
        ),
        points=expand(f"{RUN}/evaluation/{{method}}/points.parquet", method=METHODS),
        prompts=f"{RUN}/evaluation/prompts.parquet",
    output:
        **{name: update(f"{RUN}/tables/{stem}.parquet") for name, stem in TABLES.items()},
        **{f"{name}_md": update(f"{RUN}/tables/{TABLES[name]}.md") for name in MARKDOWN_TABLES},
    params:
        seeds=SEEDS,
        values=VALUES,
        evaluation=config["evaluation"],
        seed=config["seed"],
        baselines=INTERFERENCE_BASELINES,
        references=PLAN.interference_references,  # projected and planted methods: also against the method they come from
        planted=PLAN.planted_methods,  # controls built to interfere more
        tables=list(TABLES),
        markdown=MARKDOWN_TABLES,
    log:
        log_path("frontiers"),
    benchmark:
        benchmark_path("frontiers")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=60,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/frontiers.py"
