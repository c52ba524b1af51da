# Shared helpers: config validation, node software, output paths, and the value-vector chains.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from mva_core.base_model import stop_strings
from mva_core.config_paths import check_config_paths, check_output_dir
from mva_core.data import DataError, resolve_source
from mva_core.fetch import load_manifest, manifest_path, missing_files
from mva_core.job_paths import job_path
from mva_core.config import check_config_files, validate_config, value_dpo_settings
from mva_core.kept_outputs import date_back_kept_outputs
from mva_core.methods import MethodPlan, value_order
from mva_core.shared_points import borrowed_points, shared_generations
from mva_core.workload import check_max_new_tokens, evaluation_workload, planned_policy_positions

check_config_files(workflow.overwrite_configfiles or [Path(workflow.basedir) / "config.yaml"])
config.update(validate_config(config))
check_config_paths(config, Path.cwd())  # paths stay inside their roots; local data files exist

RUN = f"results/{config['run_name']}"
check_output_dir(RUN)
VALUES = value_order(config)
METHODS = list(config["methods"])
SPLITS = ["dpo_train", "rm_train", "eval"]
SEEDS = [str(s) for s in (config["seeds"] or [config["seed"]])]
SEED_RUN = f"{RUN}/seed_{{seed}}"  # value vectors, generations and scores are per training seed

# Node software (docs/cluster.md). Under `--sdm conda` every job runs in CONDA_ENV (a path relative to rules/),
# generated from the lock by tools/lockfile.py: the CUDA build of torch when the run computes on GPUs. Its
# post-deploy script installs the checkout in MVA_REPO (this one) into the new environment. Under `--sdm apptainer`
# every job runs in the image compute.container (e.g. built from envs/mva.def), when one is set.
GPU_RUN = config["compute"]["device"] == "cuda" or config["compute"]["gpus_per_job"] > 0
CONDA_ENV = "../envs/mva-cuda.yaml" if GPU_RUN else "../envs/mva.yaml"
os.environ["MVA_REPO"] = str(Path(workflow.basedir).resolve())


envvars:
    "MVA_REPO",  # declared, so executors that start jobs elsewhere pass it on


container: config["compute"]["container"]


PLAN = MethodPlan.of(config)  # what each method needs, answered by its type's class (mva_core.methods)
CHAINS = PLAN.chains
VECTOR_METHODS = PLAN.vector_methods
VECTOR_SETS = PLAN.vector_sets  # one decorrelation table per vector set, shared by the methods evaluated with it
WEIGHTINGS = config["evaluation"]["weightings"]
# The evaluation's size, printed at every start (validate_config refused it above evaluation.max_generations_per_seed)
WORKLOAD = evaluation_workload(config)
print(WORKLOAD.summary(len(SEEDS), config["evaluation"]["max_generations_per_seed"]), file=sys.stderr)
POLICY_POSITIONS = planned_policy_positions(config, f"{RUN}/models/base")  # None until the base model exists
if POLICY_POSITIONS:
    check_max_new_tokens(config["evaluation"]["generation"]["max_new_tokens"], *POLICY_POSITIONS)
# Points that are the same model as an earlier method's are generated once and copied (mva_core.shared_points).
BORROWED = borrowed_points(config)
if shared_generations(BORROWED):
    print(f"Shared points: {shared_generations(BORROWED)} (method, λ point) pairs are the same model as an earlier "
          f"method's, generated once: {shared_generations(BORROWED) * WORKLOAD.prompts * WORKLOAD.samples:,} fewer "
          "generations per training seed than the plan above", file=sys.stderr)


onerror:
    # A job that failed for good keeps its update() outputs (the previous run's files); date them back so that the
    # next run redoes the job instead of taking them as its results (mva_core.kept_outputs).
    kept = date_back_kept_outputs(workflow)
    if kept:
        print(f"Kept the previous version of {len(kept)} output(s) of failed jobs, marked out of date so that the "
              f"next run redoes them: {kept}", file=sys.stderr)


wildcard_constraints:
    value="|".join(VALUES),
    method="|".join(METHODS),
    chain="|".join(CHAINS),
    vector_set="|".join(VECTOR_SETS),
    split="|".join(SPLITS),
    seed="|".join(SEEDS),
    index=r"\d+",
    part=r"\d+",


# Files the fetch_data jobs may write: the manifest's files found under no data root.
DOWNLOADS = missing_files(load_manifest(manifest_path(config)), config["data_roots"])
DATA_ROOT = config["data_roots"][0] if config["data_roots"] else "resources/data"


def local_data_files(sources):
    """The local files ``sources`` resolve to (hub ids excluded): rule inputs, so a replaced or newly shadowing data
    file (e.g. one added under an earlier data root) reruns the jobs that read it. A file found under no data root
    but listed in the data manifest is expected in the first data root, where rule fetch_data downloads it."""
    files = []
    for source in sources:
        try:
            resolved = resolve_source(source["path"], config["data_roots"])
        except DataError:
            resolved = Path(DATA_ROOT) / source["path"]  # check_config_paths made sure it is in the manifest
        if isinstance(resolved, Path):
            files.append(str(resolved))
    return files


def job_attempt(wildcards, attempt):
    """Resource ``attempt`` of every job: its attempt number, which Snakemake gives to resource functions but not to
    scripts. mva_core.job_failures reads it to end the retry of a permanent failure at once."""
    return attempt


def rule_runtime(rule, minutes):
    """Minutes a job of ``rule`` asks for (resource ``runtime``, Slurm ``-t``): ``compute.runtime.<rule>`` where the
    config sets it (the paper configs, from the estimate in docs/cluster.md), else ``minutes``."""
    return config["compute"]["runtime"].get(rule, minutes)


def heavy_threads(wildcards):
    """Threads of a training/generation/scoring job: every core Snakemake was given (read when the job is
    scheduled, so commands without --cores, such as --unlock and --report, still parse)."""
    return max(1, workflow.cores)


def log_path(rule, *parts):
    """A job's log: ``logs/<rule>/<part>/.../<part>.log``, one directory level per wildcard (``mva_core.job_paths``)."""
    return job_path(RUN, "logs", rule, *parts)


def benchmark_path(rule, *parts):
    return job_path(RUN, "benchmarks", rule, *parts)


def checkpoint_path(rule, *parts):
    """A job's scratch directory (resume checkpoints or shards), deleted by the job once its output is written."""
    return job_path(RUN, "checkpoints", rule, *parts)


def tracking_path(rule, *parts):
    """A training job's experiment-tracking folder (config key ``tracking``), kept after the job."""
    return job_path(RUN, "tracking", rule, *parts)


def policy_base_dir():
    """The model the value vectors are trained on: the SFT model, or the base model when SFT is off."""
    return f"{RUN}/models/sft" if config["sft"]["enabled"] else f"{RUN}/models/base"


def seed_path(relative, seed="{seed}"):
    """An artifact of one training seed, from its path relative to ``seed_<s>/``."""
    return f"{RUN}/seed_{seed}/{relative}"


def value_vector_dirs():
    """Every value vector of every seed: trained, projected and planted."""
    jobs = [*PLAN.value_vectors, *PLAN.projection_jobs, *PLAN.planted_jobs]
    return sorted({seed_path(job.path, s) for job in jobs for s in SEEDS})


def value_dpo(value, wildcards):
    """The dpo section for one value's vectors (its ``values.<v>.dpo`` overrides applied), with the job's seed."""
    return value_dpo_settings(config, value, int(wildcards.seed))


def method_adapters(wildcards):
    """Adapters a method's generation job mixes: its value vectors, or its MODPO adapters (one per weighting)."""
    return {name: seed_path(path, wildcards.seed) for name, path in PLAN[wildcards.method].adapters().items()}


def borrowed_generations(wildcards):
    """Generations of the earlier methods whose points this method copies."""
    owners = sorted(set(BORROWED[wildcards.method].values()))
    return [seed_path(f"evaluation/{owner}/generations.parquet", wildcards.seed) for owner in owners]


def frozen_vector_dirs(wildcards):
    """Earlier value vectors of the chain (frozen while this one trains)."""
    job = PLAN.vector_job(wildcards.chain, wildcards.value)
    return {u: seed_path(path, wildcards.seed) for u, path in job.frozen_dirs.items()}


def derived_vector_inputs(job, seed):
    """A projected or planted vector's inputs: the vector it is computed from, and the earlier values' vectors."""
    return {"source": seed_path(job.source, seed), "earlier": [seed_path(path, seed) for path in job.earlier.values()]}


def modpo_job(wildcards):
    """The MODPO adapter job of a method and weighting index."""
    return PLAN[wildcards.method].modpo_jobs()[int(wildcards.index)]


def reward_model_input(wildcards):
    """The trained reward-model dir, or nothing for a hub id / local dir named in the config."""
    if config["values"][wildcards.value]["reward_model"]["source"] == "train":
        return {"model": f"{RUN}/reward_models/{wildcards.value}"}
    return {}


def reward_model_location(value):
    source = config["values"][value]["reward_model"]["source"]
    return f"{RUN}/reward_models/{value}" if source == "train" else source
