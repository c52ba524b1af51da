"""mva_core.seed_by_seed: a long run asked for one training seed at a time, each finished seed archived."""
from __future__ import annotations

import sys

import yaml
from conftest import REPO

from mva_core import seed_by_seed


def test_each_seed_is_run_then_archived_and_the_whole_run_last(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(seed_by_seed.subprocess, "run", lambda command, check: calls.append(("snakemake", command)))
    monkeypatch.setattr(seed_by_seed, "save", lambda run, archive: calls.append(("save", str(run))))
    monkeypatch.setattr(seed_by_seed, "rebuild_tables", lambda archive: calls.append(("tables", None)) or ["1"])
    config = REPO / "config/decorrelation_strong.yaml"
    n_seeds = len(yaml.safe_load(config.read_text())["seeds"])
    assert seed_by_seed.main(["--configfile", str(config), "--archive", str(tmp_path), "--", "--keep-going"]) == 0
    runs = [c[1] for c in calls if c[0] == "snakemake"]
    assert len(runs) == n_seeds + 1  # each seed, then the whole run
    assert runs[0][:3] == [sys.executable, "-m", "snakemake"] and "--keep-going" in runs[0]
    seed_2 = [t for t in runs[1] if t.startswith("results/")]
    assert "results/decorrelation_strong/seed_2/evaluation/projection/scores_positive.parquet" in seed_2
    assert "results/decorrelation_strong/seed_2/decorrelation/cka10.parquet" in seed_2
    assert not [t for t in seed_2 if "seed_1/" in t or "seed_3/" in t]
    assert not [t for t in runs[-1] if t.startswith("results/")]  # the last call asks for everything
    assert [c[0] for c in calls[:3]] == ["snakemake", "save", "tables"]
    assert calls[-2][0] == "save" and calls[-2][1] == "results/decorrelation_strong"
