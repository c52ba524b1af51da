"""Download the data files a config names on a fresh online machine, verified against pinned sha256 sums.

``config/manifests/data_sources.yaml`` maps a path under a data root to a pinned URL and its sha256. A file is
downloaded to a temporary name, its sum checked, then renamed into place, so a failed or interrupted download
leaves nothing.

    python -m mva_core.fetch                      # every file of the manifest into resources/data
    python -m mva_core.fetch hh-rlhf/helpful-base/test.jsonl.gz --root /data
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mva_core.artifacts import atomic_file, file_sha256

MANIFEST = Path(__file__).resolve().parents[1] / "config" / "manifests" / "data_sources.yaml"


@dataclass(frozen=True)
class DataFile:
    """One downloadable data file: where it lives under a data root, its pinned URL and its sha256."""

    path: str
    url: str
    sha256: str


def load_manifest(path: str | Path = MANIFEST) -> dict[str, DataFile]:
    """``{path under a data root: DataFile}`` from a manifest YAML."""
    import yaml

    entries = yaml.safe_load(Path(path).read_text()) or {}
    manifest = {}
    for name, entry in entries.items():
        if not isinstance(entry, Mapping) or {"url", "sha256"} - set(entry):
            raise ValueError(f"{path}: entry {name!r} needs url and sha256")
        manifest[name] = DataFile(name, str(entry["url"]), str(entry["sha256"]).lower())
    return manifest


def missing_files(manifest: Mapping[str, DataFile], roots: Sequence[str | Path]) -> dict[str, DataFile]:
    """The manifest's files found under none of ``roots``: the only ones a workflow may download. A file that is
    present is a plain source file, never re-fetched (e.g. because the download script is newer than it)."""
    return {path: entry for path, entry in manifest.items() if not any((Path(root) / path).exists() for root in roots)}


def fetch(data_file: DataFile, root: str | Path, timeout: float = 120.0) -> Path:
    """Download ``data_file`` to ``root/<path>`` (atomically) and verify its sha256; return the path."""
    target = Path(root) / data_file.path
    digest = hashlib.sha256()
    with atomic_file(target) as tmp:
        try:
            with urllib.request.urlopen(data_file.url, timeout=timeout) as response, open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
        except OSError as err:
            raise OSError(f"{data_file.path}: download from {data_file.url} failed ({err})") from err
        if digest.hexdigest() != data_file.sha256:
            raise ValueError(f"{data_file.path}: sha256 {digest.hexdigest()} of {data_file.url} does not match the "
                             f"pinned {data_file.sha256}; nothing was written")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mva_core.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="paths under the data root (default: every file of the manifest)")
    parser.add_argument("--root", default="resources/data", help="data root to download into")
    parser.add_argument("--manifest", default=str(MANIFEST))
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    unknown = sorted(set(args.paths) - set(manifest))
    if unknown:
        parser.error(f"not in {args.manifest}: {unknown}; known: {sorted(manifest)}")
    for name in args.paths or sorted(manifest):
        target = Path(args.root) / name
        if target.is_file() and file_sha256(target) == manifest[name].sha256:
            print(f"{target}: present, sha256 ok")
            continue
        fetch(manifest[name], args.root)
        print(f"{target}: downloaded, sha256 ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
