"""Atomic artifact writing and provenance metadata.

Every pipeline output is first written under a temporary name in the same directory and then renamed,
so a killed job leaves either the previous finished artifact or nothing, never a half-written file.
While a job's provenance record is active (``provenance_scope``), it travels inside every artifact written:
in the footer of each Parquet file (key ``mva.provenance``) and as ``provenance.json`` in each artifact directory.

Artifacts check themselves on read (``verify_artifact``, run on every job input by ``workflow_io.logged_job``):
Parquet files carry page CRC checksums (Parquet's own), directories a ``checksums.sha256`` manifest of their
files (``sha256sum -c`` format), written last, just before the directory is renamed into place.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_KEY = b"mva.provenance"
PROVENANCE_FILE = "provenance.json"
CHECKSUMS_FILE = "checksums.sha256"
_UNTRACKED = (CHECKSUMS_FILE, ".snakemake_timestamp")  # the manifest itself; Snakemake's marker in directory outputs
_PROVENANCE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mva_provenance", default=None)


@contextlib.contextmanager
def provenance_scope(record: dict) -> Iterator[dict]:
    """Attach ``record`` (JSON-serialisable; see ``mva_core.provenance``) to every artifact written in the block."""
    token = _PROVENANCE.set(record)
    try:
        yield record
    finally:
        _PROVENANCE.reset(token)


def current_provenance() -> dict | None:
    """The active job's provenance record, or None outside a job."""
    return _PROVENANCE.get()


def _provenance_json() -> str | None:
    record = current_provenance()
    return None if record is None else json.dumps(record, sort_keys=True, default=str)


def _umask() -> int:
    """The process umask (temporary files otherwise keep mkstemp's private 0600/0700 modes)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(target: Path) -> None:
    """Remove what a killed earlier writer of ``target`` left behind (one writer per artifact, as in Snakemake)."""
    name = glob.escape(target.name)
    for stale in [*target.parent.glob(f".{name}.*.tmp"), *target.parent.glob(f".{name}.old")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _temporary_beside(target: Path, directory: bool) -> Path:
    """A fresh temporary file or directory next to ``target`` (after clearing a killed writer's leftovers), with the
    umask's permissions (tempfile creates them private)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    prefix = f".{target.name}."
    if directory:
        tmp_path = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
    os.chmod(tmp_path, (0o777 if directory else 0o666) & ~_umask())
    return tmp_path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    tmp_path = _temporary_beside(target, directory=False)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; it replaces ``path`` only if the block succeeds."""
    target = Path(path)
    tmp_path = _temporary_beside(target, directory=True)
    try:
        yield tmp_path
        record = _provenance_json()
        if record is not None:
            (tmp_path / PROVENANCE_FILE).write_text(record + "\n")
        _make_readable(tmp_path)
        _write_checksums(tmp_path)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp_path, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, target)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Give every file the umask's mode (safetensors and tempfile write 0600), so collaborators can read it."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def _write_checksums(folder: Path) -> None:
    digests = {p.relative_to(folder).as_posix(): file_sha256(p)
               for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in _UNTRACKED}
    (folder / CHECKSUMS_FILE).write_text(format_checksums(digests))
    os.chmod(folder / CHECKSUMS_FILE, 0o666 & ~_umask())


def format_checksums(digests: dict[str, str]) -> str:
    """A ``checksums.sha256`` manifest (``sha256sum -c`` format) of relative file name -> hex sha256."""
    return "".join(f"{digest}  {name}\n" for name, digest in digests.items())


def read_checksums(manifest: str | os.PathLike) -> dict[str, str]:
    """Relative file name -> hex sha256 recorded in a ``checksums.sha256`` manifest (empty when there is none)."""
    if not os.path.isfile(manifest):
        return {}
    lines = Path(manifest).read_text().splitlines()
    return {name: digest for digest, _, name in (line.partition("  ") for line in lines)}


class CorruptArtifactError(RuntimeError):
    """A finished artifact no longer matches what was written (truncated, overwritten, files missing)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"artifact {path} is corrupt: {reason}. Delete it and rerun snakemake to rebuild it "
                         "(its producing job and everything downstream are rerun)")


def verify_artifact(path: str | os.PathLike) -> None:
    """Raise CorruptArtifactError naming ``path`` if a Parquet file fails its page checksums or cannot be read, or
    a directory's files differ from its ``checksums.sha256`` manifest. Other files and directories without a
    manifest (not written by this pipeline) pass unchecked."""
    target = Path(path)
    if target.is_dir():
        manifest = target / CHECKSUMS_FILE
        if manifest.is_file():
            _verify_manifest(target, manifest)
    elif target.suffix == ".parquet":
        try:
            pq.read_table(target, page_checksum_verification=True)
        except (OSError, pa.ArrowException) as err:
            raise CorruptArtifactError(target, f"unreadable Parquet ({err})") from None


def _verify_manifest(folder: Path, manifest: Path) -> None:
    expected = read_checksums(manifest)
    for name, digest in expected.items():
        member = folder / name
        if not member.is_file():
            raise CorruptArtifactError(folder, f"{name} is missing")
        if file_sha256(member) != digest:
            raise CorruptArtifactError(folder, f"{name} differs from the sha256 recorded when it was written")
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name not in _UNTRACKED and p.relative_to(folder).as_posix() not in expected)
    if extra:
        raise CorruptArtifactError(folder, f"files not written with it: {extra[:5]}")


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` atomically (no index, page checksums on), with the active job's provenance in the
    file footer."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    record = _provenance_json()
    if record is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PROVENANCE_KEY: record.encode()})
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The provenance record stored with an artifact: Parquet footer, ``provenance.json`` in a directory, or the
    ``provenance`` key of a JSON artifact."""
    target = Path(path)
    if target.is_dir():
        record_file = target / PROVENANCE_FILE
        return json.loads(record_file.read_text()) if record_file.is_file() else None
    if target.suffix == ".json":
        return json.loads(target.read_text()).get("provenance")
    metadata = pq.read_schema(target).metadata or {}
    return json.loads(metadata[PROVENANCE_KEY]) if PROVENANCE_KEY in metadata else None


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as pretty JSON atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes; cached per (file, size, mtime) within the process, so a job that verifies its
    inputs and then records their digests (``workflow_io.logged_job``) reads each file once."""
    stat = os.stat(path)
    return _cached_sha256(os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=4096)
def _cached_sha256(path: str, inode: int, size: int, mtime_ns: int, chunk: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object (e.g. the config section a stage uses)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine numerical results."""
    import importlib.metadata as md

    names = ["torch", "transformers", "trl", "peft", "pandas", "pyarrow", "numpy"]
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions
