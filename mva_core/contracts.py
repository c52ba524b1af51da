"""Artifact contracts: the columns and column types of every table one stage writes and a later stage reads.

Each stage validates a table where it writes it (``write_table``) and where it reads it (``read_table``), with one
function (``validate_table``); library functions that take such a table check the columns they use
(``validate_table(df, contract.only(...))``). Errors name the file (when there is one), the table and the missing
or ill-typed column. Columns beyond the contract are allowed (e.g. ``adapter`` of MODPO points).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types

from mva_core.artifacts import write_parquet


class ContractError(ValueError):
    """A table lacks a column of its contract or holds values of the wrong type; the message names both."""


@dataclass(frozen=True)
class ColumnType:
    """What a column holds: a dtype it may have, and for object columns a test every (non-null) value passes."""

    description: str
    dtype_ok: Callable[[Any], bool]
    value_ok: Callable[[Any], bool]
    nullable: bool = False


def _is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and all(
        isinstance(message, Mapping) and "role" in message and "content" in message for message in value)


def _is_number_dtype(dtype: Any) -> bool:
    return types.is_numeric_dtype(dtype) and not types.is_bool_dtype(dtype)


def _is_integer_dtype(dtype: Any) -> bool:
    return types.is_integer_dtype(dtype) and not types.is_bool_dtype(dtype)


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


TEXT = ColumnType("strings", types.is_string_dtype, lambda value: isinstance(value, str))
OPTIONAL_TEXT = ColumnType("strings or nulls", types.is_string_dtype, lambda value: isinstance(value, str), nullable=True)
IDENTIFIER = ColumnType("ids (strings or integers)", lambda dtype: types.is_string_dtype(dtype) or _is_integer_dtype(dtype),
                        lambda value: isinstance(value, str) or _is_integer(value))
MESSAGES = ColumnType("chat messages (lists of {role, content})", lambda dtype: False, _is_messages)
INTEGER = ColumnType("integers", _is_integer_dtype, _is_integer)
NUMBER = ColumnType("numbers", _is_number_dtype,
                    lambda value: _is_integer(value) or isinstance(value, (float, np.floating)))
OPTIONAL_NUMBER = ColumnType("numbers or nulls", _is_number_dtype,
                             lambda value: _is_integer(value) or isinstance(value, (float, np.floating)), nullable=True)
BOOLEAN = ColumnType("booleans", types.is_bool_dtype, lambda value: isinstance(value, (bool, np.bool_)))
INTEGER_LIST = ColumnType("lists of integers", lambda dtype: False,
                          lambda value: isinstance(value, (list, tuple, np.ndarray)) and all(map(_is_integer, value)))
LAMBDA_PREFIX = "lam_"


@dataclass(frozen=True)
class TableContract:
    """A table's required columns (in their written order) and types; ``prefixed`` maps a column-name prefix to the
    type of the one or more columns that start with it (e.g. the λ columns ``lam_<value>``)."""

    name: str
    columns: Mapping[str, ColumnType]
    prefixed: Mapping[str, ColumnType] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def only(self, *names: str) -> TableContract:
        """The contract narrowed to ``names``, for a reader that uses only those columns."""
        return TableContract(self.name, {name: self.columns[name] for name in names})


PAIRS = TableContract("preference pairs", {
    "pair_id": IDENTIFIER, "prompt": MESSAGES, "chosen": TEXT, "rejected": TEXT, "source": TEXT})
TRAINING_PAIRS = PAIRS.only("pair_id", "prompt", "chosen", "rejected")
DATA_SUMMARY = TableContract("data summary", {
    "value": TEXT, "source": TEXT, "stage": TEXT, "reason": TEXT, "rows": INTEGER})
EVALUATION_PROMPTS = TableContract("evaluation prompts", {
    "prompt_id": IDENTIFIER, "prompt": MESSAGES, "origin": TEXT, "category": OPTIONAL_TEXT})
POINTS = TableContract("λ points", {"point_id": IDENTIFIER, "kind": TEXT, "method": TEXT},
                       prefixed={LAMBDA_PREFIX: NUMBER})
GENERATIONS = TableContract("generations", {
    "point_id": IDENTIFIER, "prompt_id": IDENTIFIER, "response": TEXT, "n_prompt_tokens": INTEGER,
    "n_response_tokens": INTEGER, "finished": BOOLEAN, "method": TEXT, "dtype": TEXT})
SCORES = TableContract("scores", {
    "point_id": IDENTIFIER, "prompt_id": IDENTIFIER, "method": TEXT, "value": TEXT, "reward": NUMBER,
    "seed": INTEGER, "rm_batch_size": INTEGER, "rm_dtype": TEXT})
TRAINING_LOG = TableContract("training log", {"step": NUMBER, "dpo_loss": OPTIONAL_NUMBER, "penalty": OPTIONAL_NUMBER})

# Evaluation tables (``tables/<name>.parquet``), written by the frontiers stage and read by the figures stage.
MEAN_REWARDS = TableContract("mean rewards", {
    "method": TEXT, "point_id": IDENTIFIER, "value": TEXT, "mean": NUMBER, "ci_low": NUMBER, "ci_high": NUMBER})
WIN_RATES = TableContract("win-rate", {
    "weighting": TEXT, "target": TEXT, "baseline": TEXT, "value": TEXT, "win_rate": NUMBER, "ci_low": NUMBER,
    "ci_high": NUMBER, "verdict": TEXT})
# Every judged row (mva_core.statistics.judge): its resolution, p-value, Holm family and adjusted verdict (NaN where
# a row has no spread to estimate, e.g. a single prompt).
JUDGED = {"df": OPTIONAL_NUMBER, "mde": OPTIONAL_NUMBER, "p_value": OPTIONAL_NUMBER, "family": TEXT,
          "verdict_holm": TEXT}
COMPARISONS = TableContract("comparisons", {
    "method_a": TEXT, "method_b": TEXT, "metric": TEXT, "value": TEXT, "weighting": TEXT, "estimate": NUMBER,
    "ci_low": OPTIONAL_NUMBER, "ci_high": OPTIONAL_NUMBER, "verdict": TEXT, **JUDGED})
EFFICACY = TableContract("efficacy", {
    "method": TEXT, "value": TEXT, "lambda": NUMBER, "claim": TEXT, "estimate": NUMBER, "ci_low": NUMBER,
    "ci_high": NUMBER, "verdict": TEXT, "spearman": OPTIONAL_NUMBER, **JUDGED})
INTERFERENCE = TableContract("interference", {
    "method": TEXT, "value_u": TEXT, "value_v": TEXT, "lambda": NUMBER, "estimate": NUMBER, "ci_low": NUMBER,
    "ci_high": NUMBER, "verdict": TEXT, "matched_gap": OPTIONAL_NUMBER, **JUDGED})
HYPERVOLUMES = TableContract("hypervolume (tables/frontiers)", {
    "method": TEXT, "n_points": INTEGER, "n_selected": INTEGER, "n_selected_per_seed": INTEGER_LIST,
    "n_hull_vertices": INTEGER, "n_hull_reachable": INTEGER, "hypervolume": NUMBER, "hv_ci_low": OPTIONAL_NUMBER,
    "hv_ci_high": OPTIONAL_NUMBER, "hypervolume_std": NUMBER, "hv_std_ci_low": OPTIONAL_NUMBER,
    "hv_std_ci_high": OPTIONAL_NUMBER, "hv_df": OPTIONAL_NUMBER})
SENSITIVITY = TableContract("sensitivity", {
    "weight": NUMBER, "series": TEXT, "hypervolume": NUMBER, "hv_ci_low": NUMBER, "hv_ci_high": NUMBER,
    "hsic_lora_a_sigma1": OPTIONAL_NUMBER})


def lam_columns(points: pd.DataFrame) -> list[str]:
    """The ``lam_<value>`` columns of a points table."""
    return [c for c in points.columns if str(c).startswith(LAMBDA_PREFIX)]


def validate_table(df: pd.DataFrame, contract: TableContract, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """``df`` unchanged if it has every column of ``contract`` with values of the column's type; else raise
    ContractError naming ``path`` (if given), the table and the first missing or ill-typed column."""
    where = f"{path}: " if path is not None else ""
    missing = [name for name in contract.columns if name not in df.columns]
    missing += [f"{prefix}*" for prefix in contract.prefixed if not any(str(c).startswith(prefix) for c in df.columns)]
    if missing:
        raise ContractError(f"{where}{contract.name} table lacks columns {missing} (has {list(df.columns)})")
    checks = [*contract.columns.items()]
    checks += [(c, kind) for prefix, kind in contract.prefixed.items() for c in df.columns if str(c).startswith(prefix)]
    for name, kind in checks:
        problem = _type_problem(df[name], kind)
        if problem:
            raise ContractError(f"{where}column {name!r} of the {contract.name} table must hold {kind.description}, "
                                f"but {problem}")
    return df


def _type_problem(column: pd.Series, kind: ColumnType) -> str | None:
    """Why ``column`` does not hold ``kind`` values, or None."""
    nulls = column.isna().to_numpy()
    if nulls.any() and not kind.nullable:
        return f"the row at index {column.index[int(np.argmax(nulls))]!r} is null"
    if column.dtype != object:
        return None if kind.dtype_ok(column.dtype) or nulls.all() else f"its dtype is {column.dtype}"
    for position, (index, value) in enumerate(column.items()):
        if not nulls[position] and not kind.value_ok(value):
            return f"the row at index {index!r} holds {type(value).__name__} {value!r:.60}"
    return None


def read_table(path: str | os.PathLike, contract: TableContract) -> pd.DataFrame:
    """The Parquet table at ``path``, validated against ``contract``."""
    return validate_table(pd.read_parquet(path), contract, path)


def write_table(df: pd.DataFrame, path: str | os.PathLike, contract: TableContract) -> None:
    """Validate ``df`` against ``contract``, then write it to ``path`` (``artifacts.write_parquet``)."""
    write_parquet(validate_table(df, contract, path), path)
