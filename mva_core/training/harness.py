"""The glue around every training stage's TRL trainer (SFT, value vectors, MODPO, reward models).

A stage opens a :class:`TrainingJob`, builds its model and its trainer with ``job.arguments(...)`` and
``job.callbacks()``, calls ``job.train(trainer)`` and ``job.save(output_dir, write_model)``. The job owns what the
stages share: threads; device and mixed precision (``mva_core.precision``); the settings → TrainingArguments mapping
(:data:`SCHEDULE_ARGUMENTS`); checkpoints every ``save_steps`` and resume from the last complete checkpoint of the
same run (``mva_core.training.checkpoints``); one progress line per logging step (transformers' own per-step
metrics printout is removed) and optional experiment tracking into a folder kept after the job
(``mva_core.training.tracking``); quiet dataset progress bars; the atomic write of the output directory with
``training_log.parquet`` and ``metadata.json`` (``mva_core.training.records``); and removal of the checkpoints once
that is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import datasets
import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import TrainOutput

from mva_core.artifacts import atomic_directory, write_parquet
from mva_core.precision import Precision, resolve_precision
from mva_core.progress import ProgressLog
from mva_core.training.checkpoints import resume_point
from mva_core.training.records import LOG_FILE, TrainingMetadata, training_log
from mva_core.training.tracking import check_tracking, tracking_environment, tracking_kwargs

SCHEDULE_ARGUMENTS = {
    "learning_rate": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "train_batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "save_steps": "save_steps",
    "logging_steps": "logging_steps",
    "seed": "seed",
    "warmup_ratio": "warmup_steps",  # a value below 1 is a fraction of the total steps
    "lr_scheduler": "lr_scheduler_type",
    "gradient_checkpointing": "activation_checkpointing",
}
"""Settings field → TrainingArguments keyword. A settings class names the fields that are trainer arguments in its
``TRAINER_FIELDS``; the harness passes exactly those, so no stage copies them by hand."""

ConfigT = TypeVar("ConfigT", bound=TrainingArguments)


def schedule_arguments(settings: Any) -> dict[str, Any]:
    """The TrainingArguments a settings dataclass sets (its ``TRAINER_FIELDS``, renamed by SCHEDULE_ARGUMENTS)."""
    return {SCHEDULE_ARGUMENTS[name]: getattr(settings, name) for name in type(settings).TRAINER_FIELDS}


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence the datasets and TRL tokenisation / precompute progress bars, which ``disable_tqdm`` does not cover
    (in a log file each is one long line of carriage returns; ``ProgressLog`` prints the training progress)."""
    bars_were_on = datasets.is_progress_bar_enabled()
    previous = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


@dataclass
class TrainingJob:
    """One training run of a stage; use as a context manager around building, training and saving.

    ``settings`` maps config section names to the stage's settings dataclasses; with ``start_model_dir``, the pair
    ids and ``details`` (the stage's other inputs, e.g. frozen vectors) it fingerprints the run, so checkpoints in
    ``checkpoint_dir`` are resumed only by the same computation, and it is recorded in ``metadata.json``. Without a
    ``checkpoint_dir`` the trainer writes to a scratch directory and saves no checkpoints. With ``tracking`` other
    than ``none`` the tracker writes into ``tracking_dir`` (``mva_core.training.tracking``), which is kept.
    """

    stage: str
    label: str
    start_model_dir: str | os.PathLike
    pair_ids: list[str]
    settings: Mapping[str, Any]
    checkpoint_dir: str | os.PathLike | None
    precision: Precision | None = None  # None: fp32 on this machine's device
    tracking: str = "none"
    tracking_dir: str | os.PathLike | None = None
    threads: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    resume_from: str | None = field(init=False, default=None)
    _started: float = field(init=False, default=0.0, repr=False)
    _scratch: Path | None = field(init=False, default=None, repr=False)
    _trainer: Trainer | None = field(init=False, default=None, repr=False)
    _result: TrainOutput | None = field(init=False, default=None, repr=False)
    _exit: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack, repr=False)

    def __post_init__(self) -> None:
        self.precision = self.precision or resolve_precision("float32")
        check_tracking(self.tracking)  # before any model is loaded

    def __enter__(self) -> TrainingJob:
        self._started = time.monotonic()
        if self.threads:
            torch.set_num_threads(self.threads)
        self._exit.enter_context(quiet_progress_bars())
        if self.checkpoint_dir is None:
            self._scratch = Path(self._exit.enter_context(tempfile.TemporaryDirectory(prefix=f"{self.stage}_")))
        else:
            self.resume_from = resume_point(self.checkpoint_dir, self.fingerprint())
        self._exit.enter_context(tracking_environment(self.tracking, self.tracking_dir, fresh=self.resume_from is None))
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    @property
    def trainer_dir(self) -> Path:
        """Where the trainer writes checkpoints (deleted once the output is written)."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        if self._scratch is None:
            raise RuntimeError("TrainingJob is used outside its with block")
        return self._scratch

    def fingerprint(self) -> dict[str, Any]:
        """What makes two runs the same computation."""
        return {"stage": self.stage, "start_model_dir": str(self.start_model_dir), "pair_ids": list(self.pair_ids),
                "settings": self._settings_json(), **self.details}

    def arguments(self, config_class: type[ConfigT], schedule: Any, **stage_arguments: Any) -> ConfigT:
        """``config_class`` (SFTConfig, DPOConfig, RewardConfig ...) with the shared arguments, the ``schedule``
        settings' trainer fields and the stage's own ``stage_arguments`` (which win)."""
        return config_class(**{
            "output_dir": str(self.trainer_dir),
            "save_strategy": "steps" if self.checkpoint_dir is not None else "no",
            "save_total_limit": 2,
            "logging_steps": 1,
            "disable_tqdm": True,  # ProgressLog prints one line per step instead
            "dataloader_num_workers": 0,
            **tracking_kwargs(self.tracking, run_name=str(self.tracking_dir) if self.tracking_dir else None),
            **self.precision.trainer_kwargs(),
            **schedule_arguments(schedule),
            **stage_arguments,
        })

    def callbacks(self) -> list[ProgressLog]:
        return [ProgressLog(self.label)]

    def train(self, trainer: Trainer) -> TrainOutput:
        """Train, resuming from the last complete checkpoint of this run if there is one."""
        trainer.remove_callback(PrinterCallback)  # its metrics dict per step would double ProgressLog's line
        self._trainer = trainer
        self._result = trainer.train(resume_from_checkpoint=self.resume_from)
        return self._result

    def save(self, output_dir: str | os.PathLike, write_model: Callable[[Path], None], *,
             log_metrics: Iterable[str] = (), **details: Any) -> Path:
        """Write ``output_dir`` atomically: ``write_model(folder)``, then ``training_log.parquet`` (with the stage's
        ``log_metrics`` columns) and ``metadata.json`` (with the stage's ``details``); then drop the checkpoints."""
        if self._trainer is None or self._result is None:
            raise RuntimeError("TrainingJob.save before TrainingJob.train")
        with atomic_directory(output_dir) as folder:
            write_model(folder)
            write_parquet(training_log(self._trainer.state.log_history, log_metrics), folder / LOG_FILE)
            self._metadata(**details).write(folder)
        if self.checkpoint_dir is not None:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        return Path(output_dir)

    def _metadata(self, **details: Any) -> TrainingMetadata:
        return TrainingMetadata(
            stage=self.stage,
            start_model_dir=str(self.start_model_dir),
            settings=self._settings_json(),
            seed=self._trainer.args.seed,
            n_pairs=len(self.pair_ids),
            global_steps=self._trainer.state.global_step,
            resumed_from=Path(self.resume_from).name if self.resume_from else None,
            train_metrics=dict(self._result.metrics),
            precision=self.precision.describe(),
            wall_time_s=round(time.monotonic() - self._started, 3),
            details={**self.details, **details},
        )

    def _settings_json(self) -> dict[str, dict[str, Any]]:
        return {section: dataclasses.asdict(value) for section, value in self.settings.items()}
