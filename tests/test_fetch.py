"""Data on a fresh machine: pinned URLs with sha256 sums, downloaded atomically; the workflow plans the download
for configured files found under no data root (tested offline with file:// URLs)."""
from __future__ import annotations

import hashlib
import os

import pytest
import yaml
from conftest import REPO, snakemake
from synthetic import hh_rows, write_hh_jsonl_gz

from mva_core.fetch import MANIFEST, DataFile, fetch, load_manifest, main

SMOKE_FILES = ["hh-rlhf/helpful-base/test.jsonl.gz", "hh-rlhf/harmless-base/test.jsonl.gz"]


@pytest.fixture
def remote(tmp_path):
    """A 'server' folder with the smoke config's two files and a manifest pointing at them by file:// URL."""
    server = tmp_path / "server"
    entries = {}
    for i, path in enumerate(SMOKE_FILES):
        source = write_hh_jsonl_gz(server / path, hh_rows(60, ["helpful", "harmless"][i], seed=i))
        entries[path] = {"url": source.as_uri(), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    manifest = tmp_path / "sources.yaml"
    manifest.write_text(yaml.safe_dump(entries))
    return manifest, entries


def test_the_shipped_manifest_pins_every_default_source_by_commit():
    manifest = load_manifest(MANIFEST)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for value in config["values"].values():
        for source in value["sources"]:
            entry = manifest[source["path"]]
            assert entry.url.startswith("https://raw.githubusercontent.com/") and len(entry.sha256) == 64
            assert any(len(part) == 40 for part in entry.url.split("/"))  # a commit, not a branch


def test_fetch_verifies_the_sum_and_leaves_nothing_on_a_mismatch(remote, tmp_path):
    manifest, entries = remote
    path = SMOKE_FILES[0]
    target = fetch(DataFile(path, entries[path]["url"], entries[path]["sha256"]), tmp_path / "root")
    assert target.read_bytes() == (tmp_path / "server" / path).read_bytes()
    with pytest.raises(ValueError, match="does not match the pinned"):
        fetch(DataFile(path, entries[path]["url"], "0" * 64), tmp_path / "other")
    assert not list((tmp_path / "other").rglob("*.gz*"))
    assert main([path, "--root", str(tmp_path / "root"), "--manifest", str(manifest)]) == 0  # present: no download


def fresh_machine_args(manifest) -> list[str]:
    """The smoke config with its data under resources/data (absent) and ``manifest`` saying where to get it."""
    return ["--cores", "1", "--configfile", str(REPO / "config/smoke.yaml"), "--config", "data_roots=['resources/data']",
            f"data_manifest={manifest}"]


def test_a_fresh_machine_plans_the_download(remote, tmp_path):
    manifest, _ = remote
    planned = snakemake("-n", "-p", *fresh_machine_args(manifest), workdir=tmp_path)
    assert planned.returncode == 0, planned.stderr[-2000:]
    jobs = planned.stdout.split("\n\n")
    fetches = [job for job in jobs if "rule fetch_data:" in job]
    assert {path for path in SMOKE_FILES if any(f"resources/data/{path}" in job for job in fetches)} == set(SMOKE_FILES)
    prepare = [job for job in jobs if "rule prepare_value_data:" in job]
    assert prepare and all("resources/data/hh-rlhf/" in job for job in prepare)  # reads what fetch_data writes
    assert not (tmp_path / "resources").exists()


@pytest.mark.slow
def test_a_fresh_machine_runs_the_download(remote, tmp_path):
    """End to end (slow set): the planned downloads run (file:// URLs) and the data jobs read the files."""
    manifest, _ = remote
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = snakemake(*fresh_machine_args(manifest), "--until", "prepare_value_data", workdir=workdir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for path in SMOKE_FILES:
        assert (workdir / "resources/data" / path).read_bytes() == (tmp_path / "server" / path).read_bytes()
    assert (workdir / "results/smoke/data/helpful/dpo_train.parquet").is_file()


def test_a_file_neither_present_nor_in_the_manifest_fails_at_start(remote, tmp_path):
    manifest, _ = remote
    (tmp_path / "typo.yaml").write_text("values: {harmless: {order: 2, sources: [{path: hh-rlhf/typo/test.jsonl.gz}]}}\n")
    result = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config/smoke.yaml"), str(tmp_path / "typo.yaml"),
                       "--config", "data_roots=['resources/data']", f"data_manifest={manifest}", workdir=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "values.harmless.sources[0].path" in output and "cannot be downloaded" in output


def test_a_present_file_is_never_fetched_even_when_the_download_script_is_newer(remote, tmp_path):
    """Snakemake reruns a script rule whose script is newer than its output; a file already under a data root
    must not be re-downloaded (offline machines, fresh checkouts) but read as it is."""
    manifest, _ = remote
    root = tmp_path / "server"  # holds both files
    for path in SMOKE_FILES:
        os.utime(root / path, (0, 0))  # older than any checkout of workflow_scripts/fetch_data.py
    planned = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config/smoke.yaml"), "--config",
                        f"data_roots=['{root}']", f"data_manifest={manifest}", workdir=tmp_path)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "prepare_value_data" in planned.stdout and "fetch_data" not in planned.stdout
