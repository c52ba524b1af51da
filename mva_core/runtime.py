"""Device, thread and checkpoint helpers shared by the training stages."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

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
    """Latest complete checkpoint in ``checkpoint_dir`` if it belongs to this same ``run`` (inputs + settings),
    else None.

    Checkpoints of a different run (changed data or settings) are deleted, so a killed job resumes only into
    the same computation; so are incomplete ones (see ``is_complete_checkpoint``), with a log line each.
    """
    directory, fingerprint = Path(checkpoint_dir), config_hash(run)
    marker = directory / RUN_FINGERPRINT
    if directory.is_dir() and marker.is_file() and _marker_fingerprint(marker) == fingerprint:
        complete = []
        for checkpoint in sorted(directory.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
            if is_complete_checkpoint(checkpoint):
                complete.append(checkpoint)
            else:
                print(f"removing incomplete checkpoint {checkpoint} (no readable trainer_state.json: the job was "
                      "killed while saving it)", flush=True)
                shutil.rmtree(checkpoint, ignore_errors=True)
        return str(max(complete, key=_checkpoint_step)) if complete else None
    shutil.rmtree(directory, ignore_errors=True)
    write_json({"fingerprint": fingerprint}, marker)
    return None


def is_complete_checkpoint(checkpoint: Path) -> bool:
    """A Trainer checkpoint is complete when its trainer_state.json (written last, after weights, optimizer and RNG
    state) exists and parses."""
    try:
        TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    except (OSError, ValueError, TypeError):
        return False
    return _checkpoint_step(checkpoint) >= 0


def _checkpoint_step(checkpoint: Path) -> int:
    suffix = checkpoint.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    return int(suffix) if suffix.isdigit() else -1


def _marker_fingerprint(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None




TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}


def tracking_kwargs(tracking: str, logging_dir: str | Path) -> dict[str, Any]:
    """TrainingArguments for config key ``tracking``: ``none`` (the default: the job log and training_log.parquet
    only), ``tensorboard`` (event files under ``logging_dir``) or ``wandb`` (set WANDB_PROJECT etc. in the
    environment). Fails naming the package when it is not installed."""
    if tracking not in TRACKERS:
        raise ValueError(f"tracking {tracking!r}: expected one of {sorted(TRACKERS)}")
    package = TRACKERS[tracking]
    if package is None:
        return {"report_to": []}
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise ImportError(f"config key 'tracking' is {tracking!r} but the package {package!r} is not installed: "
                          f"pip install {package}")
    return {"report_to": [tracking], "logging_dir": str(Path(logging_dir) / "tracking")}
