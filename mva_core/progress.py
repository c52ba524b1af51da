"""Progress lines for job logs: one line per training logging step (``ProgressLog``, a Trainer callback) and one
line per tenth of a row loop (``LineProgress``: generation, scoring, the reference log-prob precompute). tqdm bars
stay for terminals; in log files they would be one long line of carriage returns."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm
from transformers.trainer_callback import TrainerCallback, TrainerControl, TrainerState


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s" if minutes >= 60 else f"{minutes}m{secs:02d}s"


class ProgressLog(TrainerCallback):
    """One line per logging step in the job log: ``<label> step 5/16 (31%), elapsed 1m20s, ETA 2m56s, loss
    0.412``, and one when training ends: ``<label>: trained 16 steps in 5m02s, mean loss 0.398`` (the Trainer's tqdm
    bars are off: they write carriage returns into log files; its metrics printout is removed by the harness)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._started: float | None = None
        self._first_step = 0

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._started, self._first_step = time.monotonic(), state.global_step
        resumed = f", resumed at step {state.global_step}" if state.global_step else ""
        print(f"{self.label}: training {state.max_steps} steps{resumed}", flush=True)

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs) -> None:
        if self._started is None or not logs:
            return
        if "train_runtime" in logs:  # the Trainer's closing summary
            loss = f", mean loss {logs['train_loss']:.4g}" if "train_loss" in logs else ""
            print(f"{self.label}: trained {state.global_step} steps in {_clock(logs['train_runtime'])}{loss}",
                  flush=True)
            return
        if "loss" not in logs:
            return
        done, total = state.global_step, max(state.max_steps, 1)
        elapsed = time.monotonic() - self._started
        rate = elapsed / max(done - self._first_step, 1)
        print(f"{self.label} step {done}/{total} ({100 * done // total}%), elapsed {_clock(elapsed)}, "
              f"ETA {_clock(rate * (total - done))}, loss {logs['loss']:.4g}", flush=True)


class LineProgress:
    """``update(n)`` over ``total`` rows; prints ``<label>: 128/384 rows (33%), elapsed .., ETA .., 2.1 rows/s`` at
    every further tenth (and at the end)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self._next = max(total, 1), label, 0, 0.1
        self._started = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done / self.total + 1e-9 < self._next and self.done < self.total:
            return
        while self._next <= self.done / self.total + 1e-9:
            self._next += 0.1
        elapsed = time.monotonic() - self._started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        print(f"{self.label}: {self.done}/{self.total} rows ({100 * self.done // self.total}%), elapsed "
              f"{_clock(elapsed)}, ETA {_clock(eta)}, {rate:.2f} rows/s", flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None


def row_progress(total: int, label: str, enabled: bool = True) -> tqdm | LineProgress:
    """A tqdm bar on a terminal, else ``LineProgress`` (disabled: a silent tqdm)."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, label)
    return tqdm(total=total, disable=not enabled, unit="row", desc=label)
