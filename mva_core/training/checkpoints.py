"""Resume rule of every training stage: the last complete checkpoint of the same run, nothing else."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mva_core.artifacts import config_hash, write_json

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
