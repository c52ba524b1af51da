"""Data on a fresh machine: pinned URLs with sha256 sums, or files of Hugging Face repositories at pinned commits,
downloaded atomically; the workflow plans the download for configured files found under no data root (tested
offline with file:// URLs and with a hub cache made in the test)."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, snakemake, snakemake_command, snakemake_env
from synthetic import hh_rows, write_hh_jsonl_gz

from mva_core.artifacts import file_sha256
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


# --- Hugging Face files at pinned commits, read offline from the hub cache (issue 25) ---

PAPER_HH = REPO / "config/paper_hh.yaml"
LLAMA_COMMIT = "01c7f73d771dfac7d292323805ebc428287df4f9"  # base_model.revision of the paper configs
RM_COMMIT = "a" * 40  # what main of the (unpinned) reward-model repositories resolves to in the fake cache
NO_NETWORK = ("import socket\n"
              "def refuse(*args, **kwargs):\n"
              "    raise OSError('this test has no network')\n"
              "socket.socket.connect = socket.create_connection = refuse\n")


def hub_cache(root, tiny_model_dir, commits: dict[str, str] | None = None):
    """A Hugging Face hub cache as ``hf download`` leaves it (``<type>s--<owner>--<name>/snapshots/<commit>/...``,
    ``refs/main`` for a branch download), holding the data files of config/paper_hh.yaml's manifest entries and
    tiny models under its three model ids. ``commits``: data path -> commit (default: the manifest's)."""
    manifest = load_manifest()
    for i, path in enumerate(["hh-rlhf/helpful-base/train.jsonl.gz", "hh-rlhf/harmless-base/train.jsonl.gz"]):
        entry = manifest[path]
        commit = (commits or {}).get(path, entry.revision)
        snapshot = root / f"datasets--{entry.repo.replace('/', '--')}" / "snapshots" / commit
        write_hh_jsonl_gz(snapshot / entry.file, hh_rows(80, ["helpful", "harmless"][i], seed=i))
    models = {"meta-llama/Llama-2-7b-hf": LLAMA_COMMIT, "Ray2333/gpt2-large-helpful-reward_model": RM_COMMIT,
              "Ray2333/gpt2-large-harmless-reward_model": RM_COMMIT}
    for repo, commit in models.items():
        folder = root / f"models--{repo.replace('/', '--')}"
        for file in tiny_model_dir.iterdir():
            (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
            (folder / "snapshots" / commit / file.name).write_bytes(file.read_bytes())
        if commit == RM_COMMIT:
            (folder / "refs").mkdir(exist_ok=True)
            (folder / "refs/main").write_text(commit)
    return root


def offline_python(code: str, cache, cwd) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with HF_HUB_OFFLINE=1, the hub cache ``cache`` and no network."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", NO_NETWORK + code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_paper_recipe_fetches_pinned_files_from_an_offline_hub_cache_and_the_data_job_reads_them(
        tmp_path, tiny_model_dir, monkeypatch):
    """The documented command for config/paper_hh.yaml, offline, on a hub cache filled beforehand: the pinned data
    files become plain files in the data root, the models are found at their revisions, and the data stage then
    reads the files with no hub and no network (datasets.load_dataset raised OfflineModeIsEnabled here)."""
    cache = hub_cache(tmp_path / "hub", tiny_model_dir)
    root = tmp_path / "data"
    fetched = offline_python(
        "from mva_core.fetch import main\n"
        f"main(['--config', {str(PAPER_HH)!r}, '--root', {str(root)!r}])\n"
        "from transformers import AutoModelForCausalLM\n"  # what the base_model job does with the pinned revision
        f"AutoModelForCausalLM.from_pretrained('meta-llama/Llama-2-7b-hf', revision={LLAMA_COMMIT!r})\n",
        cache, tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    out = fetched.stdout
    manifest = load_manifest()
    for path in ["hh-rlhf/helpful-base/train.jsonl.gz", "hh-rlhf/harmless-base/train.jsonl.gz"]:
        entry = manifest[path]
        copied = root / path
        assert copied.is_file() and not copied.is_symlink()  # a plain file: the run needs no hub cache
        source = cache / f"datasets--{entry.repo.replace('/', '--')}/snapshots/{entry.revision}/{entry.file}"
        assert copied.read_bytes() == source.read_bytes()
        assert f"{entry.repo}@{entry.revision}: {entry.file}, sha256 {file_sha256(copied)}" in out
    assert f"base_model: meta-llama/Llama-2-7b-hf at {LLAMA_COMMIT}" in out
    assert f"WARNING: not pinned; pin it with `revision: {RM_COMMIT}` under values.helpful.reward_model" in out

    import socket

    from mva_core.config import validate_config
    from mva_core.config_files import load_config_files
    from mva_core.config_paths import check_config_paths
    from mva_core.data import SourceSpec, prepare_value_data

    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("the data stage used the network"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    config = validate_config(load_config_files([PAPER_HH]) | {"data_roots": [str(root)]})
    check_config_paths(config, tmp_path)  # the workflow's start check accepts the offline state
    for value in ("helpful", "harmless"):
        sources = [SourceSpec(**s) for s in config["values"][value]["sources"]]
        prepared = prepare_value_data(value, sources, fractions=config["data"]["split"], max_pairs={}, roots=[root],
                                      on_bad_row="skip", salt="60")
        assert sum(len(split) for split in prepared.splits.values()) == 80


def test_offline_a_file_missing_from_the_hub_cache_fails_naming_it_and_leaves_nothing(tmp_path, tiny_model_dir):
    other = {"hh-rlhf/harmless-base/train.jsonl.gz": "b" * 40}  # cached at another commit than the pinned one
    cache = hub_cache(tmp_path / "hub", tiny_model_dir, commits=other)
    root = tmp_path / "data"
    result = offline_python("from mva_core.fetch import main\n"
                            f"main(['hh-rlhf/harmless-base/train.jsonl.gz', '--root', {str(root)!r}])\n", cache, tmp_path)
    assert result.returncode != 0
    assert ("hh-rlhf/harmless-base/train.jsonl.gz: dataset Anthropic/hh-rlhf@09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa: "
            "harmless-base/train.jsonl.gz could not be fetched") in result.stderr
    assert "it must be in the hub cache" in result.stderr
    assert not [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("entry,says", [
    ({"repo": "Anthropic/hh-rlhf", "file": "a.jsonl", "revision": "main"}, "revision 'main' is not a commit"),
    ({"repo": "Anthropic/hh-rlhf", "file": "a.jsonl"}, "needs ['revision']"),
    ({"repo": "Anthropic/hh-rlhf", "revision": None}, "needs ['file']"),
    ({"repo": "Anthropic/hh-rlhf", "file": "a.jsonl", "revision": None, "repo_type": "space"}, "repo_type 'space'"),
    ({"url": "https://example.org/a.jsonl"}, "needs url and sha256"),
    ({"sha256": "0" * 64}, "needs url and sha256, or repo, file and revision"),
])
def test_manifest_entries_that_are_not_pinned_sources_are_refused_naming_the_entry(tmp_path, entry, says):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"x/a.jsonl": entry}))
    with pytest.raises(ValueError, match=re.escape("entry 'x/a.jsonl'")) as failure:
        load_manifest(tmp_path / "m.yaml")
    assert says in str(failure.value)


@pytest.mark.parametrize("config", ["paper_hh.yaml", "paper_beavertails.yaml"])
def test_the_paper_configs_read_local_files_that_the_manifest_fetches(config):
    """No paper source is a hub dataset (offline, datasets.load_dataset fails); each is a manifest file, fetched from
    its repository at a commit (or explicitly unpinned, revision null), and the base model is pinned."""
    from mva_core.config import validate_config
    from mva_core.config_files import load_config_files
    from mva_core.data.sources import is_hub_id
    from mva_core.fetch import hub_models

    settings = validate_config(load_config_files([REPO / "config" / config]))
    manifest = load_manifest(MANIFEST)
    for value in settings["values"].values():
        for source in value["sources"]:
            assert not is_hub_id(source["path"]), source
            entry = manifest[source["path"]]
            assert entry.repo and (entry.revision is None or re.fullmatch(r"[0-9a-f]{40}", entry.revision)), entry
    assert hub_models(settings)["base_model"] == ("meta-llama/Llama-2-7b-hf", LLAMA_COMMIT)


def test_offline_a_hub_dataset_source_or_an_uncached_model_fails_at_workflow_start(tmp_path, monkeypatch):
    from mva_core.config import ConfigError, validate_config
    from mva_core.config_files import load_config_files
    from mva_core.config_paths import check_config_paths

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    config = load_config_files([PAPER_HH])
    online = {"path": "Anthropic/hh-rlhf", "hub_data_dir": "helpful-base", "hub_split": "train", "format": "hh"}
    config["values"]["helpful"]["sources"] = [online]  # the online alternative the config documents
    with pytest.raises(ConfigError) as failure:
        check_config_paths(validate_config(config), tmp_path)
    assert str(failure.value).startswith("config key 'values.helpful.sources[0].path': 'Anthropic/hh-rlhf' is a Hugging "
                                         "Face dataset, but HF_HUB_OFFLINE is set")
    with pytest.raises(ConfigError) as failure:
        check_config_paths(validate_config(load_config_files([PAPER_HH])), tmp_path)
    assert str(failure.value).startswith(f"config key 'base_model.source': model meta-llama/Llama-2-7b-hf@{LLAMA_COMMIT} "
                                         "is not in the Hugging Face cache")


def test_models_are_fetched_as_safetensors_only(tmp_path, monkeypatch):
    """The download asks the hub for MODEL_FILES only (no .bin copies), the documented `hf download` command names
    the same patterns, and a revision without safetensors weights is refused."""
    import huggingface_hub

    from mva_core.fetch import MODEL_FILES, fetch_model

    calls = []

    def snapshot_download(repo, **kwargs):  # the hub's side: files of the repository matching allow_patterns
        calls.append((repo, kwargs))
        return str(folder)

    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert fetch_model("meta-llama/Llama-2-7b-hf", LLAMA_COMMIT) == folder
    assert calls == [("meta-llama/Llama-2-7b-hf", {"revision": LLAMA_COMMIT, "allow_patterns": list(MODEL_FILES)})]
    docs = (REPO / "docs/cluster.md").read_text()
    assert " ".join(f'--include "{pattern}"' for pattern in MODEL_FILES) in docs
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    with pytest.raises(ValueError, match=f"model meta-llama/Llama-2-7b-hf@{LLAMA_COMMIT} has no \\*.safetensors"):
        fetch_model("meta-llama/Llama-2-7b-hf", LLAMA_COMMIT)


@pytest.mark.slow
def test_the_fetch_data_rule_copies_pinned_hub_files_offline(tmp_path, tiny_model_dir):
    """End to end (slow set): the workflow plans fetch_data for manifest files of a hub repository, the job copies
    them from the offline hub cache, and the data jobs read them."""
    cache = hub_cache(tmp_path / "hub", tiny_model_dir)
    manifest = tmp_path / "hub_sources.yaml"
    shipped = yaml.safe_load(MANIFEST.read_text())
    names = {"hh-rlhf/helpful-base/test.jsonl.gz": "hh-rlhf/helpful-base/train.jsonl.gz",  # smoke path: hub file
             "hh-rlhf/harmless-base/test.jsonl.gz": "hh-rlhf/harmless-base/train.jsonl.gz"}
    manifest.write_text(yaml.safe_dump({smoke: shipped[hub] for smoke, hub in names.items()}))
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {**snakemake_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    done = subprocess.run(snakemake_command(*fresh_machine_args(manifest), "--until", "prepare_value_data",
                                            workdir=workdir), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for smoke, hub in names.items():
        entry = load_manifest()[hub]
        source = cache / f"datasets--Anthropic--hh-rlhf/snapshots/{entry.revision}/{entry.file}"
        assert (workdir / "resources/data" / smoke).read_bytes() == source.read_bytes()
    assert (workdir / "results/smoke/data/helpful/dpo_train.parquet").is_file()
