"""Download what a run reads, pinned, on a machine with network (e.g. a cluster's login node), so the jobs read
plain files and need no network.

Data files: ``config/manifests/data_sources.yaml`` maps a path under a data root to where its bytes come from:

- ``url`` and ``sha256``: a URL at a git commit (the bytes cannot change), verified against the sum;
- ``repo``, ``file`` and ``revision`` (optional ``sha256``, ``repo_type``: dataset by default): one file of a
  Hugging Face repository at a commit, fetched with ``huggingface_hub.hf_hub_download`` into the hub cache
  (``HF_HUB_CACHE`` / ``HF_HOME``; with ``HF_HUB_OFFLINE=1`` only the cache is read) and copied into the data root.
  ``revision: null`` marks a repository whose commit could not be checked when the entry was written: its ``main``
  is fetched and the commit it resolved to printed, to be pinned.

Either way the file is written under a temporary name and renamed into place, so a failed or interrupted download
leaves nothing. Configs name these files as local sources, so no job calls ``datasets.load_dataset`` (which raises
``OfflineModeIsEnabled`` under ``HF_HUB_OFFLINE=1`` before it looks at the cache).

Models (``--config``): the config's hub models (``base_model``, ``values.<v>.reward_model``) at their
``revision``, with ``huggingface_hub.snapshot_download`` and only ``MODEL_FILES`` (safetensors weights, JSON
configs, tokenizer files; no ``.bin`` copies) into the hub cache, where the jobs' ``from_pretrained`` finds them
offline.

    python -m mva_core.fetch                                 # every file of the manifest into resources/data
    python -m mva_core.fetch hh-rlhf/helpful-base/test.jsonl.gz --root /data
    python -m mva_core.fetch --config config/paper_hh.yaml   # a config's data files (first data root) and models
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mva_core.artifacts import atomic_file, file_sha256

MANIFEST = Path(__file__).resolve().parents[1] / "config" / "manifests" / "data_sources.yaml"
COMMIT = re.compile(r"[0-9a-f]{40}")
REPO_TYPES = ("dataset", "model")
MODEL_FILES = ("*.safetensors", "*.json", "tokenizer*", "merges.txt")
"""What a model download keeps: safetensors weights (the jobs load no others: ``use_safetensors=True``), so the
``.bin`` copies many repositories also hold (Llama-2-7b-hf: 13.5 GB more) are never fetched; JSON configs; the
tokenizer (``tokenizer.json``/``tokenizer.model``, and GPT-2's ``merges.txt`` beside ``vocab.json``)."""


@dataclass(frozen=True)
class DataFile:
    """One downloadable data file: its path under a data root and where its bytes come from (a pinned ``url`` with
    its sha256, or ``file`` of the Hugging Face ``repo`` at ``revision``)."""

    path: str
    url: str | None = None
    sha256: str | None = None
    repo: str | None = None
    repo_type: str = "dataset"
    file: str | None = None
    revision: str | None = None

    @property
    def origin(self) -> str:
        if self.url:
            return self.url
        return f"{self.repo_type} {self.repo}@{self.revision or 'main (unpinned)'}: {self.file}"


def _entry(path: str, name: str, entry: Any) -> DataFile:
    """The DataFile of manifest entry ``name``; ValueError naming the entry and what it lacks."""
    if not isinstance(entry, Mapping) or not ({"url", "repo"} & set(entry)):
        raise ValueError(f"{path}: entry {name!r} needs url and sha256, or repo, file and revision")
    unknown = set(entry) - {"url", "sha256", "repo", "repo_type", "file", "revision"}
    if unknown:
        raise ValueError(f"{path}: entry {name!r} has unknown keys {sorted(unknown)}")
    sha256 = str(entry["sha256"]).lower() if entry.get("sha256") else None
    if "url" in entry:
        if sha256 is None or "repo" in entry:
            raise ValueError(f"{path}: entry {name!r} needs url and sha256 (and no repo)")
        return DataFile(name, url=str(entry["url"]), sha256=sha256)
    missing = {"file", "revision"} - set(entry)
    if missing:
        raise ValueError(f"{path}: entry {name!r} (repo {entry['repo']}) needs {sorted(missing)}")
    revision = entry["revision"]
    if revision is not None and not COMMIT.fullmatch(str(revision)):
        raise ValueError(f"{path}: entry {name!r}: revision {revision!r} is not a commit (40 hex digits); a branch "
                         "or tag can move. Write the commit, or null to fetch main and print its commit")
    repo_type = entry.get("repo_type", "dataset")
    if repo_type not in REPO_TYPES:
        raise ValueError(f"{path}: entry {name!r}: repo_type {repo_type!r} is not one of {REPO_TYPES}")
    return DataFile(name, sha256=sha256, repo=str(entry["repo"]), repo_type=repo_type, file=str(entry["file"]),
                    revision=revision)


def load_manifest(path: str | Path = MANIFEST) -> dict[str, DataFile]:
    """``{path under a data root: DataFile}`` from a manifest YAML."""
    import yaml

    entries = yaml.safe_load(Path(path).read_text()) or {}
    return {name: _entry(str(path), name, entry) for name, entry in entries.items()}


def missing_files(manifest: Mapping[str, DataFile], roots: Sequence[str | Path]) -> dict[str, DataFile]:
    """The manifest's files found under none of ``roots``: the only ones a workflow may download. A file that is
    present is a plain source file, never re-fetched (e.g. because the download script is newer than it)."""
    return {path: entry for path, entry in manifest.items() if not any((Path(root) / path).exists() for root in roots)}


def fetch(data_file: DataFile, root: str | Path, timeout: float = 120.0) -> Path:
    """Write ``data_file`` to ``root/<path>`` (atomically), verified against its sha256 when it has one; return the
    path."""
    target = Path(root) / data_file.path
    with atomic_file(target) as tmp:
        digest = _download(data_file, tmp, timeout) if data_file.url else _copy_from_hub(data_file, tmp)
        if data_file.sha256 and digest != data_file.sha256:
            raise ValueError(f"{data_file.path}: sha256 {digest} of {data_file.origin} does not match the pinned "
                             f"{data_file.sha256}; nothing was written")
    return target


def _download(data_file: DataFile, tmp: Path, timeout: float) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(data_file.url, timeout=timeout) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
    except OSError as err:
        raise OSError(f"{data_file.path}: download from {data_file.url} failed ({err})") from err
    return digest.hexdigest()


def _copy_from_hub(data_file: DataFile, tmp: Path) -> str:
    """Copy the repository file (from the hub cache, downloading it there first unless it is cached) to ``tmp``: a
    plain file in the data root, so runs need neither the cache nor the network."""
    from huggingface_hub import hf_hub_download

    try:
        cached = Path(hf_hub_download(data_file.repo, data_file.file, repo_type=data_file.repo_type,
                                      revision=data_file.revision))
    except Exception as err:  # offline and not cached, unknown repository, file or revision, no access: all alike
        raise OSError(f"{data_file.path}: {data_file.origin} could not be fetched ({type(err).__name__}: {err}). "
                      "Offline (HF_HUB_OFFLINE=1) it must be in the hub cache (HF_HUB_CACHE or HF_HOME) at that "
                      "revision") from err
    shutil.copyfile(cached, tmp)
    digest = file_sha256(tmp)
    commit = cached.parts[-len(Path(data_file.file).parts) - 1]  # .../snapshots/<commit>/<file>
    print(f"{data_file.path}: {data_file.repo}@{commit}: {data_file.file}, sha256 {digest}")
    if data_file.revision is None:
        print(f"{data_file.path}: WARNING: not pinned; pin it with `revision: {commit}` in the manifest")
    return digest


def fetch_model(repo: str, revision: str | None) -> Path:
    """``repo`` at ``revision`` (None: main) into the hub cache, ``MODEL_FILES`` only; its snapshot folder."""
    from huggingface_hub import snapshot_download

    where = f"{repo}@{revision or 'main'}"
    try:
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=list(MODEL_FILES)))
    except Exception as err:  # as in _copy_from_hub
        raise OSError(f"model {where} could not be fetched ({type(err).__name__}: {err})") from err
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"model {where} has no *.safetensors weights in {folder}: the pipeline loads safetensors "
                         "only; convert the weights or choose another revision")
    return folder


def hub_models(config: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """``{config key: (hub id, revision)}`` of a validated config's models that come from the hub (not a local
    directory, a built-in source, the pipeline's own training or an oracle)."""
    from mva_core.data.sources import is_hub_id

    sections = {"base_model": config["base_model"]}
    sections |= {f"values.{value}.reward_model": spec["reward_model"] for value, spec in config["values"].items()}
    return {key: (section["source"], section.get("revision")) for key, section in sections.items()
            if is_hub_id(section["source"]) and not Path(section["source"]).exists()}


def config_data_files(config: Mapping[str, Any], manifest: Mapping[str, DataFile]) -> list[str]:
    """The manifest paths a validated config reads (its values' sources and evaluation prompt sources)."""
    sources = [s["path"] for spec in config["values"].values() for s in spec["sources"]]
    sources += [s["path"] for s in config["evaluation"].get("prompt_sources") or []]
    return sorted(set(sources) & set(manifest))


def _fetch_files(names: Sequence[str], manifest: Mapping[str, DataFile], root: str) -> None:
    for name in names:
        target, entry = Path(root) / name, manifest[name]
        if target.is_file() and (entry.sha256 is None or file_sha256(target) == entry.sha256):
            print(f"{target}: present" + (", sha256 ok" if entry.sha256 else ""))
            continue
        fetch(entry, root)
        print(f"{target}: fetched from {entry.origin}" + (", sha256 ok" if entry.sha256 else ""), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mva_core.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="paths under the data root (default: every file of the manifest, or "
                                                 "with --config the files the config reads)")
    parser.add_argument("--config", nargs="+", metavar="FILE", help="config files (layered as with --configfile): "
                        "fetch the data files it reads and its hub models (MODEL_FILES only, into the hub cache)")
    parser.add_argument("--root", help="data root to write into (default: the config's first data root, else "
                                       "resources/data)")
    parser.add_argument("--manifest", help="data manifest (default: the config's data_manifest, else "
                                           f"{MANIFEST.relative_to(MANIFEST.parents[2])})")
    args = parser.parse_args(argv)
    config = _config(args.config) if args.config else None
    manifest_file = args.manifest or (manifest_path(config) if config else MANIFEST)
    manifest = load_manifest(manifest_file)
    unknown = sorted(set(args.paths) - set(manifest))
    if unknown:
        parser.error(f"not in {manifest_file}: {unknown}; known: {sorted(manifest)}")
    root = args.root or (config["data_roots"][0] if config and config["data_roots"] else "resources/data")
    names = list(args.paths) or (config_data_files(config, manifest) if config else sorted(manifest))
    _fetch_files(names, manifest, root)
    for key, (repo, revision) in (hub_models(config) if config else {}).items():
        folder = fetch_model(repo, revision)
        print(f"{key}: {repo} at {folder.name} in the hub cache ({folder})", flush=True)
        if revision is None:
            print(f"{key}: WARNING: not pinned; pin it with `revision: {folder.name}` under {key}")
    return 0


def manifest_path(config: Mapping[str, Any]) -> Path:
    """The data manifest of a config (``data_manifest``), relative paths taken from the repository root."""
    path = Path(config["data_manifest"])
    return path if path.is_absolute() else MANIFEST.parents[2] / path


def _config(paths: Sequence[str]) -> dict:
    from mva_core.config import validate_config
    from mva_core.config_files import load_config_files

    return validate_config(load_config_files(paths))


if __name__ == "__main__":
    sys.exit(main())
