# Shared helpers: config validation, output paths, and the value-vector chains.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from mva_core.base_model import stop_strings
from mva_core.config_paths import check_config_paths, check_output_dir, manifest_path
from mva_core.data import DataError, resolve_source
from mva_core.fetch import load_manifest, missing_files
from mva_core.config import (
    INDEPENDENT,
    chain_penalty,
    check_config_files,
    modpo_target,
    validate_config,
    value_order,
    vector_chain,
    vector_job,
)

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
CHAINS = sorted({vector_chain(config, m, v) for m in METHODS for v in VALUES} | {INDEPENDENT})


wildcard_constraints:
    value="|".join(VALUES),
    method="|".join(METHODS),
    chain="|".join(CHAINS),
    split="|".join(SPLITS),
    seed="|".join(SEEDS),


# What rule fetch_data may produce: the manifest's files found under no data root.
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


def heavy_threads(wildcards):
    """Threads of a training/generation/scoring job: every core Snakemake was given (read when the job is
    scheduled, so commands without --cores, such as --unlock and --report, still parse)."""
    return max(1, workflow.cores)


def benchmark_path(stage, name="main"):
    return f"{RUN}/benchmarks/{stage}/{name}.tsv"


def log_path(stage, name="main"):
    return f"{RUN}/logs/{stage}/{name}.log"


def policy_base_dir():
    """The model the value vectors are trained on: the SFT model, or the base model when SFT is off."""
    return f"{RUN}/models/sft" if config["sft"]["enabled"] else f"{RUN}/models/base"


def vector_dir(method, value, seed="{seed}"):
    return f"{RUN}/seed_{seed}/value_vectors/{vector_chain(config, method, value)}/{value}"


def method_type(method):
    return config["methods"][method]["type"]


VECTOR_METHODS = [m for m in METHODS if method_type(m) != "modpo"]
MODPO_METHODS = [m for m in METHODS if method_type(m) == "modpo"]
WEIGHTINGS = config["evaluation"]["weightings"]


def value_vector_dirs():
    return sorted({vector_dir(m, v, s) for m in VECTOR_METHODS for v in VALUES for s in SEEDS})


def modpo_dir(method, index, seed):
    return f"{RUN}/seed_{seed}/modpo_vectors/{method}/w{index}"


def seeded(section, wildcards):
    """A training config section with its seed replaced by the job's seed."""
    return {**config[section], "seed": int(wildcards.seed)}


def method_adapters(wildcards):
    """Adapters a method's generation job mixes: its value vectors, or its MODPO adapters (one per weighting)."""
    if method_type(wildcards.method) == "modpo":
        return {f"w{i}": modpo_dir(wildcards.method, i, wildcards.seed) for i in range(len(WEIGHTINGS))}
    return {v: vector_dir(wildcards.method, v, wildcards.seed) for v in VALUES}


def frozen_vector_dirs(wildcards):
    """Earlier value vectors of the chain (frozen while this one trains)."""
    job = vector_job(config, wildcards.chain, wildcards.value)
    return {u: vector_dir(wildcards.chain, u, wildcards.seed) for u in job.frozen_values}


def reward_model_input(wildcards):
    """The trained reward-model dir, or nothing for a hub id / local dir named in the config."""
    if config["values"][wildcards.value]["reward_model"]["source"] == "train":
        return {"model": f"{RUN}/reward_models/{wildcards.value}"}
    return {}


def reward_model_location(value):
    source = config["values"][value]["reward_model"]["source"]
    return f"{RUN}/reward_models/{value}" if source == "train" else source
