"""Checks on the file paths a config names, run at workflow start (before any job).

Paths stay inside the working directory or an explicitly configured root: ``data_roots`` for data sources,
``data_roots`` and ``model_roots`` for local model directories. Relative paths may not climb out with ``..``.
Local data sources must exist, so a typo fails before hours of training rather than in the first data job. With
``HF_HUB_OFFLINE`` set, data sources must be local files and hub models must be in the hub cache.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mva_core.config import ConfigError
from mva_core.data import DataError, resolve_source
from mva_core.data.sources import check_data_file
from mva_core.fetch import hub_models, load_manifest, manifest_path

BUILTIN_MODEL_SOURCES = {"smollm2_gguf", "tiny_random", "train"}


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    path = Path(os.path.normpath(path))
    return any(path == root or root in path.parents for root in roots)


def _check_path(key: str, value: str, roots: Sequence[Path], root_keys: str) -> None:
    path = Path(value).expanduser()
    if path.is_absolute():
        if not _inside(path, roots):
            raise ConfigError(f"config key '{key}': {value!r} is outside the working directory and the configured "
                              f"{root_keys} ({[str(r) for r in roots]}); add its folder to {root_keys}")
    elif os.path.normpath(value).split(os.sep)[0] == "..":
        raise ConfigError(f"config key '{key}': {value!r} climbs out of its root with '..'; use an absolute path "
                          f"under one of the {root_keys} or add a root")


def check_config_paths(config: Mapping[str, Any], workdir: str | Path) -> None:
    """Raise ConfigError naming the key of the first path that escapes its roots, the first missing data file
    that the data manifest cannot download either, or (with HF_HUB_OFFLINE set) the first hub dataset source or
    hub model missing from the hub cache."""
    from huggingface_hub import is_offline_mode

    workdir = Path(os.path.abspath(workdir))
    data_roots = [Path(os.path.abspath(workdir / root)) for root in config["data_roots"]]
    model_roots = [workdir, *data_roots, *(Path(os.path.abspath(workdir / r)) for r in config.get("model_roots", []))]
    sources = [(f"values.{value}.sources[{i}].path", source["path"])
               for value, spec in config["values"].items() for i, source in enumerate(spec["sources"])]
    sources += [(f"evaluation.prompt_sources[{i}].path", source["path"])
                for i, source in enumerate(config["evaluation"].get("prompt_sources") or [])]
    fetchable = set(load_manifest(manifest_path(config)))
    offline = is_offline_mode()
    for key, path in sources:
        _check_path(key, path, [workdir, *data_roots], "data_roots")
        try:
            resolved = resolve_source(path, data_roots)
        except DataError as exc:
            if path not in fetchable:
                raise ConfigError(f"config key '{key}': {exc}; it is not in {config['data_manifest']} either, so it "
                                  "cannot be downloaded") from None
            continue
        if isinstance(resolved, str) and offline:
            raise ConfigError(f"config key '{key}': {path!r} is a Hugging Face dataset, but HF_HUB_OFFLINE is set and "
                              "datasets.load_dataset cannot read it offline; fetch it as files on a machine with "
                              "network (python -m mva_core.fetch, docs/cluster.md) and name the local file")
        if isinstance(resolved, Path):
            try:
                check_data_file(resolved)
            except DataError as exc:
                raise ConfigError(f"config key '{key}': {exc}") from None
    for value, spec in config["values"].items():
        model = spec.get("reward_model", {}).get("source", "train")
        if model not in BUILTIN_MODEL_SOURCES:
            _check_path(f"values.{value}.reward_model.source", model, model_roots, "data_roots/model_roots")
    base = config["base_model"]["source"]
    if base not in BUILTIN_MODEL_SOURCES:
        _check_path("base_model.source", base, model_roots, "data_roots/model_roots")
    if offline:
        _check_models_cached(config)


def _check_models_cached(config: Mapping[str, Any]) -> None:
    """Offline, every hub model of ``config`` must be in the hub cache at its revision."""
    from huggingface_hub import try_to_load_from_cache

    for key, (repo, revision) in hub_models(config).items():
        if not isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str):
            raise ConfigError(f"config key '{key}.source': model {repo}@{revision or 'main'} is not in the Hugging Face "
                              "cache and HF_HUB_OFFLINE is set; fetch it on a machine with network (python -m "
                              "mva_core.fetch --config <your config files>, docs/cluster.md) into the same HF_HOME")


def check_output_dir(run_dir: str | Path) -> None:
    """Raise ConfigError (key ``run_name``) if ``run_dir`` or, while it does not exist yet, its nearest existing
    parent is not writable: a read-only ``results/`` fails at start instead of in the middle of the first job."""
    target = Path(os.path.abspath(run_dir))
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config key 'run_name': outputs go to {run_dir}, but {existing} is not a writable "
                          "directory; fix its permissions or run from a working directory you can write to")
