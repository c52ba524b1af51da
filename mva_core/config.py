"""Configuration: JSON-schema validation (with defaults) plus the cross-field checks a schema cannot express.

The schema lives in ``config/config.schema.yaml``; its section keys match the dataclass fields of the stages
(``dpo`` → ``DPOSettings``, ``sft`` → ``SFTSettings`` ...), so scripts build settings with ``Settings(**section)``.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "config.schema.yaml"
INDEPENDENT = "independent"
"""Chain name of value vectors trained with no penalty (first value of every chain, all of penalty-free methods)."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def validate_config(config: Mapping[str, Any]) -> dict:
    """Validate ``config`` against the schema (filling defaults) and run the cross-field checks; return a copy."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    checked = copy.deepcopy(dict(config))
    try:
        validate(checked, str(SCHEMA_PATH), set_default=True)
    except WorkflowError:
        raise ConfigError(_describe_schema_error(config)) from None
    check_config(checked)
    return checked


def _describe_schema_error(config: Mapping[str, Any]) -> str:
    """One line naming the offending key, what is wrong, and what is allowed there."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(dict(config)))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "<top level>"
    allowed = ""
    if error.validator == "additionalProperties" and "properties" in error.schema:
        allowed = f"; allowed keys: {sorted(error.schema['properties'])}"
    elif error.validator == "enum":
        allowed = f"; allowed values: {error.validator_value}"
    return f"config key '{key}': {error.message}{allowed}"


def value_order(config: Mapping[str, Any]) -> list[str]:
    """Value names in training order."""
    return sorted(config["values"], key=lambda name: (config["values"][name]["order"], name))


def check_config(config: Mapping[str, Any]) -> None:
    """Checks across keys (run after schema validation): each failure names the key and what is allowed."""
    values = value_order(config)
    orders = [config["values"][v]["order"] for v in values]
    if len(set(orders)) != len(orders):
        raise ConfigError(f"values.*.order must be unique; got {dict(zip(values, orders))}")
    split = config["data"]["split"]
    if sum(split.values()) > 1 + 1e-9:
        raise ConfigError(f"data.split fractions must sum to at most 1; got {split} (sum {sum(split.values()):.3f})")
    evaluation = config["evaluation"]
    k = len(values)
    for name, method in config["methods"].items():
        penalty = method["penalty"]
        if penalty["kind"] != "none" and penalty["weight"] == 0:
            raise ConfigError(f"methods.{name}.penalty.weight is 0 with kind '{penalty['kind']}': use kind 'none'")
        if method["type"] == "modpo":
            _check_modpo(name, method, values, evaluation["weightings"])
    grid = evaluation["grid"]
    if grid["type"] == "list":
        if not grid["points"]:
            raise ConfigError("evaluation.grid.points is empty: a 'list' grid needs at least one point")
        for i, point in enumerate(grid["points"]):
            if len(point) != k:
                raise ConfigError(f"evaluation.grid.points[{i}] has {len(point)} numbers; expected {k} (one per value: {values})")
    if grid["type"] == "box" and not grid["low"] < grid["high"]:
        raise ConfigError(f"evaluation.grid.low ({grid['low']}) must be below evaluation.grid.high ({grid['high']})")
    for i, weighting in enumerate(evaluation["weightings"]):
        if len(weighting) != k or sum(weighting) <= 0:
            raise ConfigError(f"evaluation.weightings[{i}] must have {k} non-negative weights (one per value: {values}), not all 0")
    reference = evaluation["reference_point"]
    if isinstance(reference, list) and len(reference) != k:
        raise ConfigError(f"evaluation.reference_point has {len(reference)} numbers; expected {k} (one per value: {values})")
    if evaluation["win_rate_target"] not in config["methods"]:
        raise ConfigError(
            f"evaluation.win_rate_target '{evaluation['win_rate_target']}' is not a method; choose one of {sorted(config['methods'])}"
        )


def modpo_target(config: Mapping[str, Any], method: str) -> str:
    """The value a MODPO method trains on (default: the last value in training order)."""
    return config["methods"][method].get("modpo_target") or value_order(config)[-1]


def _check_modpo(name: str, method: Mapping[str, Any], values: list[str], weightings: list[list[float]]) -> None:
    if method["penalty"]["kind"] != "none":
        raise ConfigError(f"methods.{name}.penalty.kind must be 'none' for a modpo method (its margins use the "
                          f"penalty-free value vectors)")
    target = method.get("modpo_target") or values[-1]
    if target not in values:
        raise ConfigError(f"methods.{name}.modpo_target {target!r} is not a value; choose one of {values}")
    for i, weighting in enumerate(weightings):
        if weighting[values.index(target)] <= 0:
            raise ConfigError(f"evaluation.weightings[{i}] gives modpo target {target!r} weight 0; MODPO divides by it")


@dataclass(frozen=True)
class VectorJob:
    """One value-vector training job: the chain it belongs to and the earlier vectors it is decorrelated from."""

    chain: str
    value: str
    frozen_values: tuple[str, ...]


def vector_chain(config: Mapping[str, Any], method: str, value: str) -> str:
    """Chain whose directory holds ``method``'s vector for ``value``.

    The first value of every chain has nothing to be decorrelated from, and penalty-free methods never use a
    penalty, so those vectors are shared under ``independent`` (baselines share every stage they do not change).
    """
    if config["methods"][method]["penalty"]["kind"] == "none" or value_order(config)[0] == value:
        return INDEPENDENT
    return method


def vector_job(config: Mapping[str, Any], chain: str, value: str) -> VectorJob:
    """The training job for ``value`` in ``chain`` (frozen = the chain's earlier values)."""
    if chain == INDEPENDENT:
        return VectorJob(chain, value, ())
    order = value_order(config)
    return VectorJob(chain, value, tuple(order[: order.index(value)]))


def chain_penalty(config: Mapping[str, Any], chain: str) -> dict:
    """Penalty settings (a schema section) of ``chain``."""
    if chain == INDEPENDENT:
        return {"kind": "none", "weight": 0.0}
    return dict(config["methods"][chain]["penalty"])
