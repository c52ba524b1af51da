"""The config a run records (``results/<run>/config.yaml``, rule ``run_config``) and reading it back.

The record is the config the run used: every ``--configfile`` and ``--config`` override merged, defaults filled
in, in its own key order. Passed back as ``--configfile``, it plans the same jobs with the same parameters, so the
commands that read a finished run (``mva-export``, ``mva-status``) take the run's methods, values and seeds from it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mva_core.config import validate_config
from mva_core.config_errors import ConfigError
from mva_core.config_files import load_config_files

RUN_CONFIG = "config.yaml"
"""File name of the recorded config in a run directory."""


def run_config_text(config: Mapping[str, Any]) -> str:
    """The recorded config as YAML text: a comment saying what it is, then the config in its own key order."""
    import yaml

    run = f"results/{config['run_name']}"
    header = (f"# The config run {run} used (every config file and --config override merged, defaults filled in),\n"
              f"# written by rule run_config. Read by `mva-status {run}` and `mva-export {run} ...`;\n"
              f"# `snakemake --cores all --configfile {run}/{RUN_CONFIG}` reruns the run as it was.\n")
    plain = json.loads(json.dumps(config, default=str))  # plain dicts and lists (a JSON config file loads ordered)
    return header + yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=120)


@dataclass(frozen=True)
class RunConfig:
    """The validated config of a run directory and the files it was read from."""

    run_dir: Path
    config: dict
    files: tuple[Path, ...]

    @property
    def seeds(self) -> list[int]:
        """The run's training seeds (the ``seed_<s>`` folders)."""
        return [int(s) for s in (self.config["seeds"] or [self.config["seed"]])]


def read_run_config(run_dir: str | os.PathLike, configfiles: Sequence[str | os.PathLike] = ()) -> RunConfig:
    """The config of ``run_dir``: ``configfiles`` layered in order if given, else the run's recorded config.
    ConfigError if neither is there, a file is bad, or given files are for another run."""
    run_dir = Path(run_dir)
    files = tuple(Path(f) for f in configfiles) or (run_dir / RUN_CONFIG,)
    if not configfiles and not files[0].is_file():
        raise ConfigError(f"{run_dir} records no config ({files[0]} is missing; runs record it since the rule "
                          "run_config was added): pass the config files the run was made with, --configfile FILE...")
    raw = load_config_files(files)
    try:
        config = validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{' + '.join(map(str, files))}: {exc}") from None
    if configfiles and config["run_name"] != run_dir.resolve().name:
        raise ConfigError(f"config key 'run_name': {config['run_name']!r} in {', '.join(map(str, files))}, but the "
                          f"run directory is {run_dir}: pass the config files that made this run")
    return RunConfig(run_dir, config, files)
