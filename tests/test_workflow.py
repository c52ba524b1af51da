"""The Snakemake DAG: planned for every shipped config, and the smoke config run for real on tiny data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from synthetic import write_smoke_data_root

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([REPO / "config.yaml", *(p for p in (REPO / "config").glob("*.yaml") if "schema" not in p.name)])


def snakemake(*args: str, workdir: Path | None = None, timeout: int = 1200) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    if workdir is not None:
        command += ["--directory", str(workdir)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_plans_every_stage(config):
    result = snakemake("-n", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    for rule in ["base_model", "prepare_value_data", "train_value_vector", "decorrelation_table"]:
        assert rule in plan, f"{rule} missing from the plan of {config.name}"


def test_typo_in_config_fails_before_any_job(tmp_path):
    result = snakemake("-n", "--configfile", str(REPO / "config/smoke.yaml"), "--config", "dpo={'lerning_rate': 1}")
    assert result.returncode != 0
    assert "config key 'dpo'" in result.stdout + result.stderr
    assert "lerning_rate" in result.stdout + result.stderr


@pytest.mark.slow
def test_smoke_run_builds_value_vectors_and_reruns_nothing(tmp_path):
    data_root = write_smoke_data_root(tmp_path / "data")
    args = ["--cores", "2", "--configfile", str(REPO / "config/smoke.yaml"), "--config", f"data_roots=['{data_root}']"]
    first = snakemake(*args, workdir=tmp_path)
    assert first.returncode == 0, first.stderr[-5000:]
    run = tmp_path / "results/smoke"
    for chain, value in [("independent", "helpful"), ("independent", "harmless"), ("mva", "harmless")]:
        vector = run / "value_vectors" / chain / value
        weights = load_file(vector / "adapter_model.safetensors")
        assert weights and all(t.isfinite().all() for t in weights.values())
        assert "penalty" in pd.read_parquet(vector / "training_log.parquet").columns
    table = pd.read_parquet(run / "decorrelation/mva.parquet")
    assert {"hsic_lora_a", "hsic_delta_w", "cosine_delta_w"} <= set(table.columns)
    assert len(table) > 0
    assert not list(run.rglob("*.tmp")), "temporary files left behind"
    second = snakemake(*args, "-n", workdir=tmp_path)
    assert second.returncode == 0
    assert "Nothing to be done" in second.stdout + second.stderr
