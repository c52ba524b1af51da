# Figures (Fig. 2-5 style), summary.md and the Snakemake report (`snakemake --report report.html`).

FIGURE_DIR = f"{RUN}/figures"
HEATMAP_METHODS = PLAN.heatmap_methods
VALUE_PAIRS = [(a, b) for i, a in enumerate(VALUES) for b in VALUES[i + 1 :]]
SENSITIVITY = PLAN.sensitivity_figure
FIGURE_STEMS = (
    [f"frontier_{a}_vs_{b}" for a, b in VALUE_PAIRS]
    + (["win_rates"] if len(METHODS) > 1 else [])
    + [f"heatmap_{m}" for m in HEATMAP_METHODS]
    + ["single_value_vectors", "training_curves"]
    + (["efficacy"] if PLAN.efficacy else [])
    + (["interference"] if PLAN.interference else [])
    + (["sensitivity"] if SENSITIVITY else [])
)
TRAINING_RUNS = [(job.chain, job.value) for job in PLAN.value_vectors]


rule figures:
    input:
        **{name: f"{RUN}/tables/{stem}.parquet" for name, stem in TABLES.items()},
        points=expand(f"{RUN}/evaluation/{{method}}/points.parquet", method=METHODS),
        training_logs=[f"{RUN}/seed_{SEEDS[0]}/value_vectors/{c}/{v}" for c, v in TRAINING_RUNS],
        decorrelation=expand(f"{RUN}/seed_{{seed}}/decorrelation/{{chain}}.parquet", seed=SEEDS, chain=VECTOR_SETS),
        accuracy=expand(f"{RUN}/reward_models/accuracy_{{value}}.json", value=VALUES),
        data_summaries=expand(f"{RUN}/data/{{value}}/summary.parquet", value=VALUES),
        prompts=f"{RUN}/evaluation/prompts.parquet",
    output:
        pngs=[
            report(f"{FIGURE_DIR}/{stem}.png", caption="../report/figure.rst", category="Figures")
            for stem in FIGURE_STEMS
        ],
        pdfs=[f"{FIGURE_DIR}/{stem}.pdf" for stem in FIGURE_STEMS],
        summary=report(f"{RUN}/summary.md", caption="../report/summary.rst", category="Summary"),
        sensitivity=f"{RUN}/tables/sensitivity.parquet",
    params:
        values=VALUES,
        methods=VECTOR_METHODS,
        seeds=SEEDS,
        heatmap_methods=HEATMAP_METHODS,
        method_settings={m: config["methods"][m] for m in VECTOR_METHODS},
        decorrelation_sets=PLAN.decorrelation_sets,
        sensitivity=SENSITIVITY,
        interference=PLAN.interference,
        log_labels=[f"{c}/{v}" for c, v in TRAINING_RUNS],
        tables=list(TABLES),
        run_name=config["run_name"],
        target=config["evaluation"]["win_rate_target"],
    log:
        log_path("figures"),
    benchmark:
        benchmark_path("figures")
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=4000,
        runtime=30,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/figures.py"


from mva_core.run_config import RUN_CONFIG, run_config_text


rule run_config:
    output:
        f"{RUN}/{RUN_CONFIG}",
    params:
        text=run_config_text(config),  # a changed config rewrites the record (and only it: no rule reads it)
    log:
        log_path("run_config"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../workflow_scripts/run_config.py"
