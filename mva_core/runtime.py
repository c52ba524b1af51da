"""Device, thread and checkpoint helpers shared by the training stages."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint

from mva_core.artifacts import config_hash, write_json


class NonFiniteLossError(RuntimeError):
    """A training loss (or one of its terms) became NaN or infinite; no artifact is written from such a run."""


def check_finite(label: str, loss: torch.Tensor, step: int, batch_ids: Any) -> None:
    """Raise NonFiniteLossError naming ``label``, the global ``step`` and the batch's pair ids if the scalar ``loss``
    is NaN or infinite."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{label} is {loss.item()} at global step {step} "
                                 f"(pair ids: {batch_ids if batch_ids is not None else 'unavailable'})")


RUN_FINGERPRINT = "run_fingerprint.json"  # in a checkpoint dir: which run its checkpoints belong to


def resume_point(checkpoint_dir: str | Path, run: dict[str, Any]) -> str | None:
    """Latest checkpoint in ``checkpoint_dir`` if it belongs to this same ``run`` (inputs + settings), else None.

    Checkpoints of a different run (changed data or settings) are deleted, so a killed job resumes only into
    the same computation.
    """
    directory, fingerprint = Path(checkpoint_dir), config_hash(run)
    marker = directory / RUN_FINGERPRINT
    if directory.is_dir() and marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return get_last_checkpoint(str(directory))
    shutil.rmtree(directory, ignore_errors=True)
    write_json({"fingerprint": fingerprint}, marker)
    return None

