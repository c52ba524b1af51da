"""Experiment tracking of a training job (config key ``tracking``), written to a folder that outlives the job.

transformers' tracking callbacks (``report_to``) take their folder from the environment, not from the trainer
arguments: ``TENSORBOARD_LOGGING_DIR`` (event files), ``WANDB_DIR`` (wandb's run folder) and ``MLFLOW_TRACKING_URI``
(an mlflow store). :func:`tracking_environment` sets them for the job's lifetime, pointing into the job's tracking
folder (``results/<run>/tracking/<rule>/<wildcards>/`` in the workflow), and never into the checkpoint folder that
the job deletes on success. No tracker needs a network: wandb runs ``offline`` unless ``WANDB_MODE`` says otherwise
(``wandb sync <folder>/wandb/offline-run-*`` uploads later) and mlflow writes a file store (``<folder>/mlruns``;
``mlflow ui --backend-store-uri <folder>/mlruns`` with ``MLFLOW_ALLOW_FILE_STORE=true``) unless
``MLFLOW_TRACKING_URI`` names another store.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""Config value → the Python package its transformers callback needs (also the name to ``pip install``)."""


def check_tracking(tracking: str) -> None:
    """Fail naming the config key and the package when ``tracking`` is unknown or its package is not installed."""
    if tracking not in TRACKERS:
        raise ValueError(f"config key 'tracking' is {tracking!r}: expected one of {sorted(TRACKERS)}")
    package = TRACKERS[tracking]
    if package is not None and importlib.util.find_spec(package) is None:
        extra = " (or pip install '.[tracking]')" if tracking == "tensorboard" else ""
        raise ImportError(f"config key 'tracking' is {tracking!r} but the package {package!r} is not installed: "
                          f"pip install {package}{extra}")


def tracking_kwargs(tracking: str, run_name: str | None = None) -> dict[str, object]:
    """The trainer arguments for ``tracking``: ``report_to`` and, when tracking, the run's name in the tracker."""
    check_tracking(tracking)
    if TRACKERS[tracking] is None:
        return {"report_to": []}
    return {"report_to": [tracking], **({"run_name": run_name} if run_name else {})}


def tracker_environment(tracking: str, folder: Path) -> dict[str, str]:
    """The environment variables that send ``tracking``'s files into ``folder`` (a wandb mode or mlflow store that
    the user set is kept)."""
    if tracking == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(folder)}
    if tracking == "wandb":
        return {"WANDB_DIR": str(folder), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    if tracking == "mlflow" and "MLFLOW_TRACKING_URI" in os.environ:
        return {}
    if tracking == "mlflow":  # mlflow >= 3.17 refuses its file store unless opted in; a database may fail on NFS
        return {"MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    return {}


@contextlib.contextmanager
def tracking_environment(tracking: str, folder: str | os.PathLike | None, *, fresh: bool) -> Iterator[None]:
    """Within the block, ``tracking``'s callback writes into ``folder`` (created; emptied first when ``fresh``, i.e.
    the job starts from step 0, so a rerun's curves are not mixed with a superseded run's; a resumed job adds to
    them). On exit the environment is restored and an open wandb or mlflow run is closed, so its files are
    complete."""
    check_tracking(tracking)
    if TRACKERS[tracking] is None:
        yield
        return
    if folder is None:
        raise ValueError(f"config key 'tracking' is {tracking!r} but the training job was given no tracking folder")
    folder = Path(folder).resolve()
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    variables = tracker_environment(tracking, folder)
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    failed = True
    try:
        yield
        failed = False
    finally:
        _close_open_run(tracking, failed)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _close_open_run(tracking: str, failed: bool) -> None:
    """transformers leaves a wandb run open after training (and an mlflow run after a failure)."""
    if tracking == "wandb":
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
    elif tracking == "mlflow":
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
