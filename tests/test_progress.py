"""Progress lines in job logs (per training step with total, elapsed and ETA; per tenth of a row loop) and the
experiment-tracking setting."""
from __future__ import annotations

import re

from transformers.trainer_callback import TrainerControl, TrainerState

from mva_core.progress import LineProgress, ProgressLog


def test_training_progress_has_step_total_elapsed_eta_and_loss(capsys):
    callback, state = ProgressLog("DPO"), TrainerState(max_steps=16)
    callback.on_train_begin(None, state, TrainerControl())
    for step in (1, 2):
        state.global_step = step
        callback.on_log(None, state, TrainerControl(), logs={"loss": 0.5 / step})
    callback.on_log(None, state, TrainerControl(), logs={"train_runtime": 3.0})  # the final summary: no line
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "DPO: training 16 steps"
    assert re.fullmatch(r"DPO step 2/16 \(12%\), elapsed \dm\d\ds, ETA \dm\d\ds, loss 0\.25", lines[-1])
    assert len(lines) == 3 and "\r" not in "".join(lines)


def test_row_progress_prints_a_line_per_tenth_and_the_end(capsys):
    progress = LineProgress(95, "generate")
    for _ in range(95):
        progress.update()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("generate: 95/95 rows (100%)")
    assert lines[0].startswith("generate: 10/95 rows (10%)")


def test_tracking_maps_to_report_to_and_names_a_missing_package(tmp_path, monkeypatch):
    import importlib.util

    import pytest

    from mva_core.training.harness import tracking_kwargs

    assert tracking_kwargs("none", tmp_path) == {"report_to": []}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="config key 'tracking' is 'tensorboard'.*pip install tensorboard"):
        tracking_kwargs("tensorboard", tmp_path)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert tracking_kwargs("wandb", tmp_path) == {"report_to": ["wandb"], "logging_dir": str(tmp_path / "tracking")}
    with pytest.raises(ValueError, match="expected one of"):
        tracking_kwargs("mlflow", tmp_path)
