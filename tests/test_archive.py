"""mva-archive: a run's finished seeds kept in git, and its tables rebuilt from that archive alone."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_planning import write_run

from mva_core.archive import ArchiveError, main, read_csv, rebuild_tables, save
from mva_core.config import validate_config
from mva_core.decorrelation import table_columns
from mva_core.methods import MethodPlan
from mva_core.reporting import build_tables


@pytest.fixture
def run(tmp_path) -> Path:
    """A finished run of the default config's methods (mva, soup) over seeds 1-3, whose seed 3 lacks one score."""
    root = write_run(tmp_path / "run", np.random.default_rng(0).normal(2.0, 1.0, size=(3, 24)),
                     seconds={"generate/seed1/mva/part0": 12.0})
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["seeds"] = [1, 2, 3]
    config["evaluation"]["bootstrap"] = 200
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "seed_3" / "evaluation" / "soup" / "scores_positive.parquet").unlink()
    for seed in (1, 2, 3):  # dependence tables of the two vector sets (no rows: these vectors are not real)
        for vector_set in ("independent", "mva"):
            path = root / f"seed_{seed}/decorrelation/{vector_set}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(columns=table_columns()).to_parquet(path)
    return root


def test_save_keeps_complete_seeds_and_no_prompt_text_and_the_tables_rebuild_alone(run, tmp_path):
    archive = tmp_path / "docs" / "run"
    assert save(run, archive, only=["2"]) == ["2"] and not (archive / "seed_1").exists()
    assert save(run, archive) == ["1", "2"]
    assert not (archive / "seed_3").exists()
    assert list(read_csv(archive / "evaluation/prompts.csv").columns) == ["prompt_id", "origin", "category"]
    assert rebuild_tables(archive) == ["1", "2"]

    config = validate_config(yaml.safe_load((run / "config.yaml").read_text()))
    plan = MethodPlan.of(config)
    scores = pd.concat([pd.read_parquet(p) for s in (1, 2) for p in sorted(run.glob(f"seed_{s}/evaluation/*/scores_*.parquet"))],
                       ignore_index=True)
    points = pd.concat([pd.read_parquet(run / f"evaluation/{m}/points.parquet") for m in config["methods"]])
    expected = build_tables(scores, points, pd.read_parquet(run / "evaluation/prompts.parquet"), config["evaluation"],
                            ["concise", "positive"], config["seed"], plan.baselines)
    assert {p.suffix for p in archive.rglob("*") if p.is_file()} <= {".csv", ".md", ".yaml", ".json", ".tsv"}  # text
    interference = read_csv(archive / "tables/interference.csv")
    pd.testing.assert_frame_equal(interference, expected.interference, check_dtype=False)
    assert set(interference["n_seeds"]) == {2}
    assert (archive / "tables/interference.md").read_text().startswith("|")
    assert "generate/seed1/mva/part0 | 12" in (archive / "job_times.md").read_text()
    assert (archive / "summary.md").read_text().startswith("Archived training seeds: 1, 2 (2 of the 3 the config names); "
                                                           "interim")

    shutil.rmtree(run)  # the analysis needs nothing of results/
    before = (archive / "tables/interference.md").read_text()
    (archive / "tables/interference.md").unlink()
    assert main(["tables", str(archive)]) == 0
    assert (archive / "tables/interference.md").read_text() == before


def test_a_run_without_a_finished_seed_or_config_is_refused_naming_it(run, tmp_path, capsys):
    for seed in (1, 2):
        (run / f"seed_{seed}" / "evaluation" / "mva" / "scores_concise.parquet").unlink()
    assert main(["save", str(run), str(tmp_path / "archive")]) == 2
    assert "no training seed has scores for every method" in capsys.readouterr().err
    (run / "config.yaml").unlink()
    assert main(["save", str(run), str(tmp_path / "archive")]) == 2
    assert "config.yaml is missing" in capsys.readouterr().err
    assert not (tmp_path / "archive").exists()


def test_an_archive_takes_only_its_own_experiment_and_only_complete_seeds(run, tmp_path):
    archive = tmp_path / "archive"
    stale = run / "seed_1/evaluation/old_method/scores_concise.parquet"  # a method no longer in the config
    stale.parent.mkdir(parents=True)
    shutil.copyfile(run / "seed_1/evaluation/mva/scores_concise.parquet", stale)
    (run / "seed_2/decorrelation/mva.parquet").unlink()  # seed 2 lacks a dependence table: not finished
    assert save(run, archive) == ["1"]
    assert not (archive / "seed_1/evaluation/old_method").exists() and not (archive / "seed_2").exists()
    before = {p: p.read_bytes() for p in archive.rglob("*") if p.is_file()}

    config = yaml.safe_load((run / "config.yaml").read_text())
    config["dpo"]["beta"] = 0.2  # another experiment under the same run name
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ArchiveError, match=r"another config .*\['dpo'\]"):
        save(run, archive)
    config["dpo"]["beta"] = 0.1
    config.setdefault("compute", {})["mem_mb"] = 1234  # where it ran may differ
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    prompts = pd.read_parquet(run / "evaluation/prompts.parquet")
    prompts.iloc[:-1].to_parquet(run / "evaluation/prompts.parquet")
    with pytest.raises(ArchiveError, match="other evaluation prompts"):
        save(run, archive)
    assert {p: p.read_bytes() for p in archive.rglob("*") if p.is_file()} == before  # refused before writing
