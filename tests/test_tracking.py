"""Experiment tracking (config key ``tracking``): files in the job's tracking folder, kept after the job; a missing
package or folder named before any model is loaded; wandb and mlflow offline by default."""
from __future__ import annotations

import importlib.util
import os

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_sft import PAIRS, SETTINGS
from transformers.trainer_callback import TrainerState
from trl import SFTConfig

from mva_core.sft import SFTSettings, run_sft
from mva_core.training.harness import TrainingJob
from mva_core.training.tracking import tracker_environment, tracking_environment, tracking_kwargs


def test_tensorboard_event_files_hold_every_logged_step_and_survive_the_job(tmp_path, tiny_model_dir):
    """Issue 25: ``tracking: tensorboard`` crashed (``logging_dir`` is no trainer argument in transformers 5), and
    its files would have sat in the checkpoint dir, which the job deletes on success."""
    out = run_sft(tiny_model_dir, PAIRS, tmp_path / "sft", SETTINGS, checkpoint_dir=tmp_path / "ckpt", threads=1,
                  tracking="tensorboard", tracking_dir=tmp_path / "tracking" / "sft")
    assert not (tmp_path / "ckpt").exists() and not list(out.rglob("events.out.tfevents.*"))
    events = list((tmp_path / "tracking" / "sft").glob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0].parent)).Reload()
    losses = [(event.step, event.value) for event in scalars.Scalars("train/loss")]
    log = pd.read_parquet(out / "training_log.parquet")
    assert [step for step, _ in losses] == log["step"].tolist() == [1, 2, 3, 4]
    assert [value for _, value in losses] == pytest.approx(log["loss"].tolist(), rel=1e-6)
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # the job's environment is restored


def test_a_resumed_job_adds_to_its_tracking_files_and_a_fresh_start_replaces_them(tmp_path):
    def job(**changes):
        fields = {"stage": "sft", "label": "SFT", "start_model_dir": "base", "pair_ids": ["a", "b"],
                  "settings": {"sft": SFTSettings()}, "checkpoint_dir": tmp_path / "ckpt", "tracking": "tensorboard",
                  "tracking_dir": tmp_path / "tracking", **changes}
        return TrainingJob(**fields)

    with job() as first:
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tracking")
        (tmp_path / "tracking" / "events.first").write_text("steps 1-2")
        args = first.arguments(SFTConfig, SETTINGS)
        assert args.report_to == ["tensorboard"] and args.run_name == str(tmp_path / "tracking")
    (tmp_path / "ckpt" / "checkpoint-2").mkdir()
    TrainerState(global_step=2).save_to_json(str(tmp_path / "ckpt" / "checkpoint-2" / "trainer_state.json"))
    with job() as resumed:
        assert resumed.resume_from and (tmp_path / "tracking" / "events.first").exists()
    with job(pair_ids=["a", "c"]) as fresh:  # another computation starts at step 0: the old curves go
        assert fresh.resume_from is None and not list((tmp_path / "tracking").iterdir())
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_tracking_names_a_missing_package_or_folder_before_any_model_is_loaded(tmp_path, monkeypatch):
    def job(**changes):
        return TrainingJob(stage="sft", label="SFT", start_model_dir="base", pair_ids=["a"], settings={},
                           checkpoint_dir=None, **changes)

    with pytest.raises(ValueError, match="config key 'tracking' is 'comet': expected one of"):
        job(tracking="comet")
    with pytest.raises(ValueError, match="'tensorboard' but the training job was given no tracking folder"):
        with job(tracking="tensorboard"):
            pass
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="'mlflow' but the package 'mlflow' is not installed: pip install mlflow"):
        job(tracking="mlflow", tracking_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    assert tracking_kwargs("none") == {"report_to": []}


def test_wandb_and_mlflow_stay_offline_in_the_job_folder_unless_told_otherwise(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    assert tracker_environment("wandb", tmp_path) == {"WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline"}
    assert tracker_environment("mlflow", tmp_path) == {"MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
                                                       "MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracker_environment("wandb", tmp_path)["WANDB_MODE"] == "online"
    assert tracker_environment("mlflow", tmp_path) == {}
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "elsewhere")
    with tracking_environment("tensorboard", tmp_path / "job", fresh=True):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "job")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "elsewhere"
