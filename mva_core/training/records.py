"""What every model directory says about how it was made: ONE training-log format and ONE metadata format.

``training_log.parquet``: one row per logging step (the trainer's log entries that carry a ``loss``), columns
``step, epoch, loss``, then the stage's own metrics (value vectors: ``dpo_loss, penalty, delta_w_norm,
rewards/accuracies, rewards/margins``), ``learning_rate``, then whatever else the trainer logged, sorted. A column
always exists, NaN where a step did not log it.

``metadata.json`` (:class:`TrainingMetadata`): the stage, the model it started from, its settings as config sections,
the training seed, pairs, steps, the checkpoint it resumed from, the trainer's final metrics, the compute
precision, library versions and wall time, plus the stage's own details at the top level (value vectors:
``init_seed``, ``frozen_vectors``, ``margin_weights``, ``target_weight``, ``delta_w_norms``, ...).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mva_core.artifacts import library_versions, write_json

LOG_FILE = "training_log.parquet"
METADATA_FILE = "metadata.json"
LOG_LEADING = ("step", "epoch", "loss")
LOG_TRAILING = ("learning_rate",)


def training_log(log_history: Iterable[Mapping[str, Any]], metrics: Iterable[str] = ()) -> pd.DataFrame:
    """Per-logging-step records (entries with a ``loss``): step, epoch, loss, ``metrics``, learning_rate, then the
    other logged keys sorted; each of the named columns present (NaN if never logged)."""
    df = pd.DataFrame.from_records([dict(entry) for entry in log_history if "loss" in entry])
    columns = (*LOG_LEADING, *metrics, *LOG_TRAILING)
    for column in columns:
        if column not in df.columns:
            df[column] = float("nan")
    return df[[*columns, *sorted(set(df.columns) - set(columns))]]


@dataclass(frozen=True)
class TrainingMetadata:
    """``metadata.json`` of a model directory (base model, SFT model, value vector, MODPO adapter, reward model).

    ``settings`` maps config section names (``sft``; ``lora``, ``dpo``, ``penalty``; ``reward_model``;
    ``base_model``) to their values; ``details`` are the stage's own keys, written at the top level. Fields a stage
    does not have (the base model is not trained) are null.
    """

    stage: str
    start_model_dir: str
    settings: dict[str, dict[str, Any]]
    seed: int | None = None
    n_pairs: int | None = None
    global_steps: int | None = None
    resumed_from: str | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)
    precision: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None
    library_versions: dict[str, str] = field(default_factory=library_versions)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        core = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "details"}
        clash = sorted(set(core) & set(self.details))
        if clash:
            raise ValueError(f"stage details {clash} would overwrite metadata fields of the same name")
        return {**core, **self.details}

    def write(self, folder: str | os.PathLike) -> None:
        write_json(self.to_json(), Path(folder) / METADATA_FILE)


def read_metadata(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``metadata.json`` of a model directory (None if it has none), in the format of :class:`TrainingMetadata`.

    Directories written before that format (value vectors with ``sft_model_dir`` and top-level ``lora``/``dpo``/
    ``penalty``; reward models with ``base_model_dir`` and flat ``settings``) are read into the same keys.
    """
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    metadata = json.loads(path.read_text())
    if "stage" in metadata:
        return metadata
    if "sft_model_dir" in metadata:  # a value vector or MODPO adapter
        settings = {section: metadata[section] for section in ("lora", "dpo", "penalty") if section in metadata}
        return {**metadata, "stage": "value_vector", "start_model_dir": metadata["sft_model_dir"], "settings": settings}
    return {**metadata, "stage": "reward_model", "start_model_dir": metadata.get("base_model_dir"),
            "settings": {"reward_model": metadata.get("settings", {})}}
