# Shared helpers: config validation, output paths, and the value-vector chains.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from mva_core.config import (
    INDEPENDENT,
    chain_penalty,
    modpo_target,
    validate_config,
    value_order,
    vector_chain,
    vector_job,
)

config.update(validate_config(config))

RUN = f"results/{config['run_name']}"
VALUES = value_order(config)
METHODS = list(config["methods"])
SPLITS = ["dpo_train", "rm_train", "eval"]
CHAINS = sorted({vector_chain(config, m, v) for m in METHODS for v in VALUES} | {INDEPENDENT})


wildcard_constraints:
    value="|".join(VALUES),
    method="|".join(METHODS),
    chain="|".join(CHAINS),
    split="|".join(SPLITS),


def log_path(stage, name="main"):
    return f"{RUN}/logs/{stage}/{name}.log"


def policy_base_dir():
    """The model the value vectors are trained on: the SFT model, or the base model when SFT is off."""
    return f"{RUN}/models/sft" if config["sft"]["enabled"] else f"{RUN}/models/base"


def vector_dir(method, value):
    return f"{RUN}/value_vectors/{vector_chain(config, method, value)}/{value}"


def method_type(method):
    return config["methods"][method]["type"]


VECTOR_METHODS = [m for m in METHODS if method_type(m) != "modpo"]
MODPO_METHODS = [m for m in METHODS if method_type(m) == "modpo"]
WEIGHTINGS = config["evaluation"]["weightings"]


def value_vector_dirs():
    return sorted({vector_dir(m, v) for m in VECTOR_METHODS for v in VALUES})


def modpo_dir(method, index):
    return f"{RUN}/modpo_vectors/{method}/w{index}"


def method_adapters(wildcards):
    """Adapters a method's generation job mixes: its value vectors, or its MODPO adapters (one per weighting)."""
    if method_type(wildcards.method) == "modpo":
        return {f"w{i}": modpo_dir(wildcards.method, i) for i in range(len(WEIGHTINGS))}
    return {v: vector_dir(wildcards.method, v) for v in VALUES}


def frozen_vector_dirs(wildcards):
    """Earlier value vectors of the chain (frozen while this one trains)."""
    job = vector_job(config, wildcards.chain, wildcards.value)
    return {u: vector_dir(wildcards.chain, u) for u in job.frozen_values}
