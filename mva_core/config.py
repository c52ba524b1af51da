"""Configuration: JSON-schema validation (with defaults) plus the cross-field checks a schema cannot express.

The schema lives in ``config/config.schema.yaml``; its section keys match the dataclass fields of the stages
(``dpo`` → ``DPOSettings``, ``sft`` → ``SFTSettings`` ...), so scripts build settings with ``Settings(**section)``;
``tests/test_settings_schema.py`` keeps keys, types and defaults of both sides equal.
"""
from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mva_core.config_errors import ConfigError
from mva_core.config_errors import key_error as _key_error
from mva_core.config_files import load_config_file
from mva_core.methods import method_for, value_order
from mva_core.workload import evaluation_workload

_PERIODIC_END = re.compile(r"(.+)\1{19,}$")  # Snakemake's PeriodicityDetector rejects such wildcard values
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "config.schema.yaml"


def validate_config(config: Mapping[str, Any]) -> dict:
    """Validate ``config`` against the schema (filling defaults) and run the cross-field checks; return a copy."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    _check_finite(config)
    checked = copy.deepcopy(dict(config))
    try:
        validate(checked, str(SCHEMA_PATH), set_default=True)
    except WorkflowError:
        raise ConfigError(_describe_schema_error(config)) from None
    check_config(checked)
    return checked


def value_dpo_settings(config: Mapping[str, Any], value: str, seed: int) -> dict:
    """The ``dpo`` section that trains ``value``'s vectors: the run's, with the value's own ``values.<v>.dpo``
    overrides (e.g. a learning rate per value) and the job's training ``seed``."""
    return {**config["dpo"], **config["values"][value].get("dpo", {}), "seed": seed}


def _check_finite(node: Any, key: str = "") -> None:
    """Reject NaN and ±inf anywhere in the config (JSON-schema bounds let NaN through), naming the key."""
    if isinstance(node, float) and not math.isfinite(node):
        raise _key_error(key or "<top level>", f"is {node}; only finite numbers are allowed")
    if isinstance(node, Mapping):
        for name, child in node.items():
            _check_finite(child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list | tuple):
        for i, child in enumerate(node):
            _check_finite(child, f"{key}[{i}]")


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Read every config file as plain YAML data (``config_files.load_config_file``): a key written twice, a tag
    that is not plain data or an alias bomb is refused naming the file and the line."""
    for path in paths:
        load_config_file(path)


def _describe_schema_error(config: Mapping[str, Any]) -> str:
    """One line naming the offending key, what is wrong, and what is allowed there."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(dict(config)))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "<top level>"
    return f"config key '{key}': {_explain(error)}"


def _explain(error: Any) -> str:
    """What is wrong with the value of a ``jsonschema`` error and what is allowed instead."""
    rule, limit, instance = error.validator, error.validator_value, error.instance
    if "propertyNames" in error.schema_path:
        if rule == "not":
            return f"the name {instance!r} is reserved; choose another"
        if rule == "maxLength":
            return f"the name {instance[:20]!r}... has {len(instance)} characters; at most {limit} (output file names are built from it)"
        return f"the name {instance!r} is not allowed; names must match {limit!r}"
    if rule == "additionalProperties" and "properties" in error.schema:
        return f"{error.message}; allowed keys: {sorted(error.schema['properties'])}"
    if error.parent is not None and error.parent.validator in ("oneOf", "anyOf"):
        message = f"{instance!r} is not allowed" if rule == "enum" else error.message
        return f"{message}; allowed: {' or '.join(_accepts(branch) for branch in error.parent.validator_value)}"
    if rule == "enum":
        return f"{instance!r} is not allowed; allowed values: {limit}"
    if rule == "minProperties":
        return f"has {_count(len(instance), 'entry', 'entries')} {sorted(instance)}; at least {limit} required"
    if rule == "minItems":
        return f"has {_count(len(instance), 'item', 'items')}; at least {limit} required"
    return error.message


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


_BOUNDS = (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<="))
_ARTICLES = {"array": "a list", "object": "a mapping", "integer": "an integer", "null": "null"}


def _accepts(schema: Mapping[str, Any]) -> str:
    """Short text of what a schema branch accepts, e.g. ``a number > 0`` or ``one of ['median']``."""
    if "enum" in schema:
        return f"one of {schema['enum']}"
    types = schema.get("type", [])
    text = "/".join(_ARTICLES.get(t, f"a {t}") for t in ([types] if isinstance(types, str) else types)) or "a value"
    bounds = [f"{op} {schema[name]}" for name, op in _BOUNDS if name in schema]
    if "minItems" in schema:
        bounds.append(f"of at least {schema['minItems']} items")
    return " ".join([text, *bounds])


def check_config(config: Mapping[str, Any]) -> None:
    """Checks across keys (run after schema validation): each failure names the key and what is allowed."""
    values = value_order(config)
    k = len(values)
    per_value = f"one per value, in training order: {values}"
    seen: dict[int, str] = {}
    folded: dict[str, str] = {}
    for value in values:
        if value.lower() in folded:
            raise _key_error(f"values.{value}", f"differs from value {folded[value.lower()]!r} only in case; their "
                                                "output folders would collide on case-insensitive file systems")
        folded[value.lower()] = value
        order = config["values"][value]["order"]
        if order in seen:
            raise _key_error(f"values.{value}.order", f"{order} is also the order of {seen[order]!r}; orders must be unique")
        seen[order] = value
        evaluator = config["values"][value]["reward_model"]
        if (evaluator["source"] == "oracle") != (evaluator.get("scorer") is not None):
            raise _key_error(f"values.{value}.reward_model.scorer", "is required with source 'oracle' and allowed only "
                                                                    "there; allowed scorers: conciseness, positivity, "
                                                                    "inoffensiveness")
        for i, source in enumerate(config["values"][value]["sources"]):
            if source["format"] == "pku" and source["view"] is None:
                raise _key_error(f"values.{value}.sources[{i}].view",
                                 "format 'pku' needs a view; allowed values: ['better', 'safer']")
    split = config["data"]["split"]
    if sum(split.values()) > 1 + 1e-9:
        raise _key_error("data.split", f"fractions must sum to at most 1; got {split} (sum {sum(split.values()):.3f})")
    evaluation = config["evaluation"]
    for key in ("weightings", "selection_weightings"):
        for i, weighting in enumerate(evaluation[key] or []):
            if len(weighting) != k or sum(weighting) <= 0:
                raise _key_error(f"evaluation.{key}[{i}]", f"{weighting} must have {k} non-negative weights "
                                                          f"({per_value}), not all 0")
    for name in config["methods"]:
        method_for(name, config).check()
    grid = evaluation["grid"]
    if grid["type"] == "list":
        if not grid["points"]:
            raise _key_error("evaluation.grid.points", "is empty: a 'list' grid needs at least one point")
        for i, point in enumerate(grid["points"]):
            if len(point) != k:
                raise _key_error(f"evaluation.grid.points[{i}]", f"has {len(point)} numbers; expected {k} ({per_value})")
    if grid["type"] == "box" and not grid["low"] < grid["high"]:
        raise _key_error("evaluation.grid.low", f"{grid['low']} must be below evaluation.grid.high ({grid['high']})")
    reference = evaluation["reference_point"]
    if isinstance(reference, list) and len(reference) != k:
        raise _key_error("evaluation.reference_point", f"has {len(reference)} numbers; expected {k} ({per_value})")
    if evaluation["win_rate_target"] not in config["methods"]:
        raise _key_error("evaluation.win_rate_target", f"{evaluation['win_rate_target']!r} is not a method; "
                                                       f"allowed values: {sorted(config['methods'])}")
    _check_prompt_sources(evaluation, values)
    evaluation_workload(config).check(evaluation["max_generations_per_seed"])
    _check_claims(evaluation, values)
    _check_dpo_lengths(config["dpo"])
    compute = config["compute"]
    if compute["device"] == "cpu" and compute["gpus_per_job"] > 0:
        raise _key_error("compute.device", f"is cpu, but compute.gpus_per_job asks Slurm for {compute['gpus_per_job']} "
                                           "GPU(s) per GPU stage that no job would use; set gpus_per_job: 0, or "
                                           "device: auto to compute on the GPUs")
    _check_generation(evaluation["generation"])
    for section in ("values", "methods"):
        for name in config[section]:
            if _PERIODIC_END.search(name):
                raise _key_error(f"{section}.{name}", "ends in one piece repeated 20 or more times, which Snakemake "
                                                      "refuses in file names (PeriodicWildcardError); choose another")


def _check_dpo_lengths(dpo: Mapping[str, Any]) -> None:
    """A prompt limit that leaves no room for the reply would truncate every reply away: DPO would then train on
    identical chosen and rejected tokens (loss stuck at log 2, a vector that learns nothing)."""
    if dpo["max_prompt_length"] is not None and dpo["max_prompt_length"] >= dpo["max_length"]:
        raise _key_error("dpo.max_prompt_length", f"{dpo['max_prompt_length']} leaves no reply tokens within "
                                                  f"dpo.max_length ({dpo['max_length']}); it must be below it")


def _check_generation(generation: Mapping[str, Any]) -> None:
    """Several replies per prompt need sampling: greedy decoding would write the same reply every time."""
    if generation["samples_per_prompt"] > 1 and not generation["do_sample"]:
        raise _key_error("evaluation.generation.samples_per_prompt", f"is {generation['samples_per_prompt']}, but "
                         "evaluation.generation.do_sample is false: greedy decoding gives the same reply every time; "
                         "set do_sample: true or samples_per_prompt: 1")


PRIMARY_ROW_COLUMNS = {"comparisons": {"method_a", "method_b", "metric", "weighting", "value"},
                       "baseline_comparisons": {"method_a", "method_b", "metric", "weighting", "value"},
                       "efficacy": {"method", "value", "lambda"},
                       "interference": {"method", "value_u", "value_v", "lambda"}}


def _check_claims(evaluation: Mapping[str, Any], values: list[str]) -> None:
    """Equivalence margins name values (or the hypervolume); each primary-row selector names columns of its table
    and existing values."""
    for name in evaluation["equivalence_margins"]:
        if name not in [*values, "hypervolume"]:
            raise _key_error(f"evaluation.equivalence_margins.{name}", f"is not a value; allowed: {[*values, 'hypervolume']}")
    for i, selector in enumerate(evaluation["primary_rows"]):
        allowed = PRIMARY_ROW_COLUMNS[selector["table"]]
        for column, wanted in selector.items():
            if column != "table" and column not in allowed:
                raise _key_error(f"evaluation.primary_rows[{i}].{column}", f"is not a column of the "
                                                                          f"{selector['table']} table; allowed: {sorted(allowed)}")
            if column in ("value", "value_u", "value_v") and wanted not in values:
                raise _key_error(f"evaluation.primary_rows[{i}].{column}", f"{wanted!r} is not a value; allowed: {values}")


def _check_prompt_sources(evaluation: Mapping[str, Any], values: list[str]) -> None:
    names = [source["name"] for source in evaluation["prompt_sources"]]
    for i, name in enumerate(names):
        if name in values:
            raise _key_error(f"evaluation.prompt_sources[{i}].name", f"{name!r} is a value name, so the prompt table's "
                                                                     f"origin column could not tell them apart; "
                                                                     f"choose another name (values: {values})")
        if names.index(name) != i:
            raise _key_error(f"evaluation.prompt_sources[{i}].name", f"{name!r} is used twice; names must be unique")
    if evaluation["prompts_per_value"] == 0 and not names:
        raise _key_error("evaluation.prompts_per_value", "is 0 and evaluation.prompt_sources is empty: there would be "
                                                         "no evaluation prompts; raise it or add a prompt source")
