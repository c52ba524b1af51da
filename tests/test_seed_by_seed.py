"""mva_core.seed_by_seed: a long run asked for one training seed at a time, each finished seed archived."""
from __future__ import annotations

import sys

import pytest
import yaml
from conftest import REPO

from mva_core import seed_by_seed

CONFIG = REPO / "config/decorrelation_strong.yaml"
SEEDS = [str(s) for s in yaml.safe_load(CONFIG.read_text())["seeds"]]


@pytest.fixture
def calls(monkeypatch) -> list:
    made = []
    monkeypatch.setattr(seed_by_seed.subprocess, "run", lambda command, check: made.append(("snakemake", command)))
    monkeypatch.setattr(seed_by_seed, "save", lambda run, archive, only=None: made.append(("save", str(run), only)))
    monkeypatch.setattr(seed_by_seed, "rebuild_tables", lambda archive: made.append(("tables", None)) or ["1"])
    return made


def targets(command: list[str]) -> list[str]:
    return [t for t in command if t.startswith("results/")]


def test_each_seed_is_run_then_archived_and_the_whole_run_last(monkeypatch, calls, tmp_path):
    monkeypatch.setattr(seed_by_seed, "complete_seeds",  # results/ has every seed, the archive none yet
                        lambda folder, config, suffix=".parquet": SEEDS if str(folder).startswith("results") else [])
    assert seed_by_seed.main(["--configfile", str(CONFIG), "--archive", str(tmp_path), "--", "--keep-going"]) == 0
    runs = [c[1] for c in calls if c[0] == "snakemake"]
    assert len(runs) == len(SEEDS) + 1  # each seed, then the whole run
    assert runs[0][:3] == [sys.executable, "-m", "snakemake"] and "--keep-going" in runs[0]
    seed_2 = targets(runs[1])
    assert "results/decorrelation_strong/seed_2/evaluation/projection/scores_positive.parquet" in seed_2
    assert "results/decorrelation_strong/seed_2/decorrelation/cka10.parquet" in seed_2
    for value in ("concise", "positive"):  # the evaluator checks, without which an archive's judgements do not count
        assert f"results/decorrelation_strong/reward_models/accuracy_{value}.json" in seed_2
    assert not [t for t in seed_2 if "seed_1/" in t or "seed_3/" in t]
    assert not targets(runs[-1])  # the last call asks for everything
    assert [c[0] for c in calls[:3]] == ["snakemake", "save", "tables"]
    assert calls[1][2] == ["1"]  # after a seed's run, only that seed is saved (others may be out of date)
    assert calls[-2] == ("save", "results/decorrelation_strong", None)


def test_on_a_new_machine_archived_seeds_are_kept_and_not_trained_again(calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/ here
    archive = tmp_path / "archive"
    files = [*(f"evaluation/{m}/scores_{v}.csv" for m in ("soup", "mva", "cka10", "projection")
               for v in ("concise", "positive")),
             *(f"decorrelation/{s}.csv" for s in ("independent", "mva", "cka10", "projection"))]
    for seed in ("1", "2"):
        for name in files:
            path = archive / f"seed_{seed}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    assert seed_by_seed.main(["--configfile", str(CONFIG), "--archive", str(archive)]) == 0
    runs = [c[1] for c in calls if c[0] == "snakemake"]
    assert len(runs) == len(SEEDS) - 2  # seeds 3.., and no whole-run call: results/ lacks seeds 1 and 2
    assert "results/decorrelation_strong/seed_3/decorrelation/cka10.parquet" in targets(runs[0])
    assert all(targets(run) for run in runs) and calls[-1] == ("tables", None)
