"""Second probe of bad inputs and faults, as a new user would meet them (issue 15): each case asserts what the
pipeline now does. Valid-but-unusual inputs must work; invalid ones fail before any job, naming the culprit."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO, snakemake
from synthetic import hh_rows, write_hh_jsonl_gz

from mva_core.artifacts import write_parquet
from mva_core.config import ConfigError, validate_config
from mva_core.config_paths import check_config_paths, check_output_dir
from mva_core.data import DataError, load_pairs

SMOKE = REPO / "config/smoke.yaml"


def smoke_config() -> dict:
    import yaml

    return yaml.safe_load(SMOKE.read_text())


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("key, change", [
    ("evaluation.grid.lambdas", lambda c: c["evaluation"]["grid"].update(lambdas=[0.0, 0.0, 1.0])),
    ("evaluation.grid.points", lambda c: c["evaluation"]["grid"].update(type="list", points=[[1, 0], [1, 0]])),
    ("values.Helpful", lambda c: c["values"].update(Helpful={**c["values"]["helpful"], "order": 9})),
])
def test_repeated_grid_points_and_case_clashing_value_names_are_rejected(key, change):
    config = smoke_config()
    change(config)
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        validate_config(config)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_data")
    write_hh_jsonl_gz(root / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows(40, "helpful", seed=1))
    write_hh_jsonl_gz(root / "hh-rlhf/harmless-base/test.jsonl.gz", hh_rows(40, "harmless", seed=2))
    return root


@pytest.mark.parametrize("override, key", [
    ("dpo={'beta': .nan}", "dpo.beta"),
    ("evaluation={'grid': {'lambdas': [0, .inf]}}", "evaluation.grid.lambdas[1]"),
    ("dpo={'epochs': 'two'}", "dpo.epochs"),
])
def test_command_line_overrides_are_validated_like_files(data_root, tmp_path, override, key):
    result = snakemake("-n", "--cores", "1", "--configfile", str(SMOKE), "--config", f"data_roots=['{data_root}']",
                       override, workdir=tmp_path)
    assert result.returncode != 0 and f"config key '{key}'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_an_empty_config_file_is_refused_by_snakemake(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    result = snakemake("-n", "--cores", "1", "--configfile", str(tmp_path / "empty.yaml"), workdir=tmp_path)
    assert result.returncode != 0 and "Config file must be given as JSON or YAML" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ data


def test_utf8_bom_and_windows_line_endings_load(tmp_path):
    rows = hh_rows(5, "helpful")
    path = tmp_path / "windows.jsonl"
    path.write_bytes(("\ufeff" + "\r\n".join(json.dumps(r) for r in rows) + "\r\n").encode("utf-8"))
    pairs = load_pairs(str(path))
    assert len(pairs) == 5 and not pairs["chosen"].str.contains("\r").any()


def test_a_gz_name_on_plain_text_is_named(tmp_path):
    path = tmp_path / "plain.jsonl.gz"
    path.write_text("\n".join(json.dumps(r) for r in hh_rows(3, "helpful")))
    with pytest.raises(DataError, match=rf"{path}: cannot read file \(BadGzipFile"):
        load_pairs(str(path))


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_json_files_hold_an_array_or_json_lines(tmp_path, layout):
    rows = hh_rows(4, "helpful")
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows) if layout == "array" else "\n".join(json.dumps(r) for r in rows))
    assert len(load_pairs(str(path))) == 4


def test_emoji_and_extra_fields_are_kept_and_ignored(tmp_path):
    rows = [{**r, "chosen": r["chosen"] + " 🙂", "annotator": 7} for r in hh_rows(3, "helpful")]
    path = tmp_path / "extra.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    pairs = load_pairs(str(path))
    assert pairs["chosen"].str.endswith("🙂").all() and "annotator" not in pairs.columns


# --------------------------------------------------------------------------------------- faults and disk


def test_a_full_disk_while_writing_keeps_the_finished_table(tmp_path, monkeypatch):
    path = tmp_path / "scores.parquet"
    write_parquet(pd.DataFrame({"reward": [1.0, 2.0]}), path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_parquet(pd.DataFrame({"reward": [3.0]}), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]  # no temporary file left behind


def test_an_unwritable_results_folder_fails_at_start_naming_it(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    check_output_dir(tmp_path / "results/run")  # writable: passes
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "results" else real_access(p, mode))
    with pytest.raises(ConfigError, match=rf"config key 'run_name'.*{tmp_path / 'results'} is not a writable"):
        check_output_dir(tmp_path / "results/run")


def test_results_that_is_a_file_fails_at_start(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(ConfigError, match="is not a writable directory"):
        check_output_dir(tmp_path / "results/run")


# ------------------------------------------------------------------ third probe (issue 22): sizes and names


@pytest.mark.parametrize("key, change", [
    ("dpo.max_prompt_length", lambda c: c["dpo"].update(max_length=8, max_prompt_length=64)),
    ("dpo.epochs", lambda c: c["dpo"].update(epochs=1e9)),
    ("sft.epochs", lambda c: c["sft"].update(epochs=1e9)),
    ("values.helpful.dpo.epochs", lambda c: c["values"]["helpful"].update(dpo={"epochs": 1e9})),
    ("values.helpful.reward_model.epochs", lambda c: c["values"]["helpful"]["reward_model"].update(epochs=1e9)),
    ("base_model.tiny_hidden_size", lambda c: c["base_model"].update(tiny_hidden_size=100_000)),
    ("base_model.tiny_layers", lambda c: c["base_model"].update(tiny_layers=1000)),
    ("lora.r", lambda c: c["lora"].update(r=100_000)),
    ("values", lambda c: c["values"].update({"v" * 65: c["values"].pop("helpful")})),
    ("methods", lambda c: c["methods"].update({"m" * 65: {"penalty": {"kind": "none"}}})),
    ("run_name", lambda c: c.update(run_name="r" * 65)),
    ("values." + "h" * 30, lambda c: c["values"].update({"h" * 30: c["values"].pop("helpful")})),
    ("methods.mva" + "xy" * 20, lambda c: c["methods"].update({"mva" + "xy" * 20: {"penalty": {"kind": "none"}}})),
])
def test_sizes_that_waste_a_run_and_names_too_long_for_file_names_fail_at_start(key, change):
    """Before: a prompt limit above the token limit trained every vector on empty replies (loss stuck at log 2);
    1e9 epochs or a 100,000-wide tiny model planned silently; a 300-character value name ended the data job with
    'File name too long'; a name ending in 20 repeats stopped Snakemake with PeriodicWildcardError."""
    config = smoke_config()
    change(config)
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        validate_config(config)


def test_a_folder_named_as_a_data_file_fails_at_start(data_root, tmp_path):
    """Before: planned, then the data job failed (and was retried)."""
    config = validate_config({**smoke_config(), "data_roots": [str(data_root)]})
    config["values"]["helpful"]["sources"][0]["path"] = "hh-rlhf"
    with pytest.raises(ConfigError, match=r"config key 'values.helpful.sources\[0\].path'.*a folder, not a data file"):
        check_config_paths(config, tmp_path)


def test_a_lora_rank_above_a_targeted_layer_size_fails_before_training():
    from mva_core.lora import LoraSettings
    from mva_core.tiny import TinyModelSpec, build_tiny_llama, build_tiny_tokenizer

    model = build_tiny_llama(build_tiny_tokenizer(), TinyModelSpec())
    smallest = min(min(m.in_features, m.out_features) for n, m in model.named_modules() if n.endswith("k_proj"))
    LoraSettings(r=smallest).check_fits(model)  # fits: no error
    with pytest.raises(ValueError, match=rf"config key 'lora.r': rank {smallest + 1} exceeds .*use at most {smallest}"):
        LoraSettings(r=smallest + 1).check_fits(model)
