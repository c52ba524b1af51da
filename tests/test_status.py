"""mva-status: what a run lacks per stage and the command that makes it; the report command once it is complete
(``snakemake --report`` on an unfinished run only prints "Missing metadata" lines, issue 22 case 7)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_cli, snakemake_env
from synthetic import write_smoke_data_root

from mva_core.config import validate_config
from mva_core.run_config import RUN_CONFIG, read_run_config, run_config_text
from mva_core.status import SUMMARY_HEADER, describe, main, parse_summary, rule_order

REPO = Path(__file__).resolve().parents[1]


def status_of(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(main, capsys, *argv)


@pytest.fixture
def unfinished(tmp_path, monkeypatch):
    """A working directory whose smoke run has recorded its config and made nothing else (cwd: the workdir)."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["data_roots"] = [str(write_smoke_data_root(tmp_path / "data"))]
    run_dir = tmp_path / "results/smoke"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_CONFIG).write_text(run_config_text(validate_config(config)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", snakemake_env()["PATH"])  # no 9 s Slurm probe in the Snakemake subprocess
    return run_dir


def test_an_unfinished_run_lists_what_is_missing_per_stage_and_the_command(unfinished, capsys):
    status, out, err = status_of(capsys, "results/smoke")
    assert status == 1, err
    assert out.startswith("results/smoke is not complete: ")
    stages = [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ") and ": " in line
              and not line.startswith("      ")]
    assert stages[:3] == ["prepare_value_data", "data_summary", "base_model"]
    assert {"train_value_vector", "generate", "score", "frontiers", "figures"} <= set(stages)
    assert stages == sorted(stages, key=rule_order().index)  # stage order: the order the workflow defines its rules
    assert "      results/smoke/seed_1/value_vectors/mva/harmless" in out.splitlines()
    assert f"--configfile results/smoke/{RUN_CONFIG}" in out and "snakemake --cores all" in out
    assert "--report results/smoke/report.html" in out.splitlines()[-1]


def test_a_run_without_a_recorded_config_or_outside_results_is_named(unfinished, capsys, tmp_path):
    (unfinished / RUN_CONFIG).rename(tmp_path / "smoke.yaml")
    status, _, err = status_of(capsys, "results/smoke")
    assert status == 2 and "records no config" in err and "--configfile" in err
    (tmp_path / "other.yaml").write_text((tmp_path / "smoke.yaml").read_text().replace("run_name: smoke", "run_name: x"))
    status, _, err = status_of(capsys, "results/smoke", "--configfile", "other.yaml")
    assert status == 2 and "'x'" in err and "results/smoke" in err
    status, _, err = status_of(capsys, "results/smoke", "--configfile", "missing.yaml")
    assert status == 2 and "config file missing.yaml: no such file" in err
    (tmp_path / "elsewhere").mkdir()
    status, _, err = status_of(capsys, "elsewhere", "--configfile", "smoke.yaml")
    assert status == 2 and "not a run directory" in err


SUMMARY = "\n".join(["Building DAG of jobs...", SUMMARY_HEADER,
                     "results/r/data/a.parquet\tMon Dec  7 10:30:56 2026\tprepare_value_data\t-\tok\tno update",
                     "results/r/tables/t.parquet\tMon Dec  7 10:30:56 2026\tfrontiers\t-\tparams changed\tupdate pending",
                     "results/r/tables/u.parquet\t-\tfrontiers\t-\tmissing\tupdate pending",
                     "results/r/figures/f.png\t-\tfigures\t-\tmissing\tupdate pending", ""])


def test_the_summary_is_read_and_described_by_stage():
    outputs = parse_summary(SUMMARY)
    assert [(o.rule, o.status, o.pending) for o in outputs] == [
        ("prepare_value_data", "ok", False), ("frontiers", "params changed", True), ("frontiers", "missing", True),
        ("figures", "missing", True)]
    text = describe("results/r", outputs, "snakemake --cores all", "snakemake --report r.html")
    assert text.splitlines()[:3] == ["results/r is not complete: 3 of 4 outputs to make, by stage (rule):",
                                     "  frontiers: 1 outdated (params changed), 1 missing",
                                     "      results/r/tables/t.parquet"]
    done = describe("results/r", outputs[:1], "snakemake --cores all", "snakemake --report r.html")
    assert done == "results/r is complete: all 1 outputs are up to date.\nBuild the report with:\n  snakemake --report r.html\n"
    with pytest.raises(ValueError, match="no summary table"):
        parse_summary("WorkflowError: something else")


@pytest.mark.slow
def test_a_finished_run_is_complete_and_a_new_method_is_listed(smoke_run, capsys, monkeypatch, tmp_path):
    """The recorded config plans the finished smoke run with nothing to do (same jobs, same parameters); a config
    with one more method lists its jobs and the tables it changes."""
    workdir, _ = smoke_run
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PATH", snakemake_env()["PATH"])
    run = read_run_config("results/smoke")
    assert "mva_twin" in run.config["methods"]  # every config file and --config override of the run
    status, out, err = status_of(capsys, "results/smoke")
    assert status == 0, out + err
    assert out.startswith("results/smoke is complete: all ")
    report = out.splitlines()[-1]
    assert "snakemake --report results/smoke/report.html" in report and report.endswith(f"results/smoke/{RUN_CONFIG}")
    (tmp_path / "more.yaml").write_text("methods:\n  soup2: {penalty: {kind: none}}\n")
    status, out, err = status_of(capsys, "results/smoke", "--configfile", f"results/smoke/{RUN_CONFIG}",
                                 str(tmp_path / "more.yaml"))
    assert status == 1, out + err
    assert "      results/smoke/seed_1/evaluation/soup2/generations.parquet" in out.splitlines()
    assert "  frontiers: " in out and "outdated" in out
