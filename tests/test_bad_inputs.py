"""Catalogue of bad inputs and faults, one case per class (README "Bad input"): each asserts that the message names
the culprit and that no finished artifact changed.

Classes: 1 config, 2 data, 3 atomic artifacts (kill mid-write), 4 resume after SIGKILL, 5 numerical faults,
6 reproducibility, 7 safe loading and path confinement.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, snakemake, snakemake_command, snakemake_env
from safetensors.torch import load_file
from synthetic import hh_rows, synthetic_pairs, write_hh_jsonl_gz, write_smoke_data_root

from mva_core.artifacts import atomic_directory, write_parquet
from mva_core.config import ConfigError, check_config_files, validate_config
from mva_core.config_paths import check_config_paths
from mva_core.reward_models import NonFiniteRewardError, RewardModelSettings, RewardScorer, score_generations, train_reward_model
from mva_core.training.guards import NonFiniteLossError

SMOKE = REPO / "config/smoke.yaml"


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``root``."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workdir whose data splits and base model are finished (smoke config), plus its args and a snapshot."""
    workdir = tmp_path_factory.mktemp("finished")
    root = tmp_path_factory.mktemp("data")
    write_hh_jsonl_gz(root / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows(60, "helpful", seed=1))
    write_hh_jsonl_gz(root / "hh-rlhf/harmless-base/test.jsonl.gz", hh_rows(60, "harmless", seed=2))
    args = ["--cores", "2", "--configfile", str(SMOKE)]
    roots = f"data_roots=['{root}']"
    result = snakemake(*args, "--config", roots, "--until", "data_summary", "base_model", workdir=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, args, root, snapshot(workdir / "results")


# ------------------------------------------------------------------------------------------------ 1. config


def test_config_typo_fails_at_start_naming_the_key(finished):
    workdir, args, root, before = finished
    result = snakemake(*args, "--config", f"data_roots=['{root}']", "dpo={'lerning_rate': 1}", workdir=workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'dpo'" in output and "lerning_rate" in output and "learning_rate" in output  # allowed keys listed
    assert snapshot(workdir / "results") == before


# -------------------------------------------------------------------------------------------------- 2. data


def test_missing_data_file_fails_at_start_naming_key_and_roots(finished, tmp_path):
    workdir, args, root, before = finished
    (tmp_path / "bad.yaml").write_text("values: {harmless: {order: 2, sources: [{path: hh-rlhf/typo/test.jsonl.gz}]}}\n")
    result = snakemake(*args, str(tmp_path / "bad.yaml"), "--config", f"data_roots=['{root}']", workdir=workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "values.harmless.sources[0].path" in output and "hh-rlhf/typo/test.jsonl.gz" in output and str(root) in output
    assert "prepare_value_data" not in output.split("config key")[0]  # nothing was scheduled before the error
    assert snapshot(workdir / "results") == before


def test_malformed_row_names_file_and_line_and_other_artifacts_survive(finished, tmp_path):
    workdir, args, root, before = finished
    rows = [json.dumps(r) for r in hh_rows(60, "harmless", seed=2)]
    rows[2] = '{"chosen": "truncated'
    (root / "hh-rlhf/harmless-base/broken.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "bad.yaml").write_text("values: {harmless: {order: 2, sources: [{path: hh-rlhf/harmless-base/broken.jsonl}]}}\n")
    result = snakemake(*args, str(tmp_path / "bad.yaml"), "--config", f"data_roots=['{root}']", "--until", "data_summary",
                       workdir=workdir)
    assert result.returncode != 0
    log = (workdir / "results/smoke/logs/prepare_value_data/harmless.log").read_text()
    assert "harmless-base/broken.jsonl" in log and "line 3" in log
    after = snapshot(workdir / "results")
    unrelated = {k: v for k, v in before.items() if not k.startswith(("smoke/data/harmless", "smoke/logs"))}
    assert {k: after.get(k) for k in unrelated} == unrelated  # helpful data and the base model are untouched
    assert not [k for k in after if k.startswith("smoke/data/harmless") or k.endswith(".tmp")]  # no half-written split


# ------------------------------------------------------------------------------------- 3. atomic artifacts

WRITER = """
import sys, numpy as np, pandas as pd
from mva_core.artifacts import atomic_directory, write_parquet
kind, target, marker = sys.argv[1:]
frame = pd.DataFrame({"x": np.arange(3_000_000, dtype="float64")})
open(marker, "w").close()
while True:
    if kind == "parquet":
        write_parquet(frame, target)
    else:
        with atomic_directory(target) as tmp:
            for i in range(4):
                frame.to_parquet(f"{tmp}/part{i}.parquet")
"""


@pytest.mark.parametrize("kind", ["parquet", "directory"])
def test_kill_during_write_leaves_the_old_artifact_or_a_complete_new_one(tmp_path, kind):
    target, marker = tmp_path / ("t.parquet" if kind == "parquet" else "adapter"), tmp_path / "started"
    rng = random.Random(0)
    for attempt in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target), str(marker)], cwd=REPO)
        while not marker.exists():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))  # a random moment inside one of the repeated writes
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        marker.unlink()
        # whatever is visible under the final name is complete (a kill before the first write ends leaves nothing)
        files = ([target] if kind == "parquet" else sorted(target.glob("part*.parquet"))) if target.exists() else []
        for path in files:
            assert len(pd.read_parquet(path)) == 3_000_000, f"attempt {attempt}: {path} is incomplete"
        assert kind == "parquet" or not target.exists() or len(files) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.name.startswith(".")]
    if kind == "parquet":  # the next successful write removes what the killed writers left behind
        write_parquet(pd.DataFrame({"x": [1.0]}), target)
    else:
        with atomic_directory(target) as tmp:
            (tmp / "part0.parquet").write_bytes(b"")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------- 4. resume + 6. reproducibility (e2e)

MVA_TARGETS = [f"results/smoke/seed_1/evaluation/mva/scores_{value}.parquet" for value in ("helpful", "harmless")]


def _run_until_killed(args: list[str], workdir: Path, log: Path, seconds: float) -> bool:
    """Start the run, SIGKILL its whole process group ``seconds`` after ``log`` appears; True if it was killed."""
    process = subprocess.Popen(snakemake_command(*MVA_TARGETS, *args, workdir=workdir), cwd=REPO, env=snakemake_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not log.exists() and process.poll() is None:
        time.sleep(0.1)
    time.sleep(seconds)
    if process.poll() is not None:
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return True


def _job_seconds(run: Path, tsv: str) -> float:
    return float(pd.read_csv(run / "benchmarks" / tsv, sep="\t")["s"].iloc[0])


@pytest.mark.slow
def test_smoke_run_killed_during_training_and_generation_resumes_to_identical_results(smoke_run, tmp_path):
    reference, args = smoke_run
    ref_run, run = reference / "results/smoke", tmp_path / "results/smoke"
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    rerun = [*args, "--rerun-incomplete"]
    for log, tsv in [("train_value_vector/seed1/mva/harmless.log", "train_value_vector/seed1/mva/harmless.tsv"),
                     ("generate/seed1/mva/part0.log", "generate/seed1/mva/part0.tsv")]:
        moment = rng.uniform(0.1, 0.9) * _job_seconds(ref_run, tsv)
        killed = _run_until_killed(rerun, tmp_path, run / "logs" / log, moment)
        print(f"seed {seed}: killed {killed} at {moment:.1f}s into {log}")
        assert snakemake("--unlock", *args, workdir=tmp_path).returncode == 0
    finished = snakemake(*rerun, *MVA_TARGETS, workdir=tmp_path)
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-4000:]

    vector = "seed_1/value_vectors/mva/harmless/adapter_model.safetensors"
    expected, got = load_file(ref_run / vector), load_file(run / vector)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    for table in ["data/helpful/dpo_train.parquet", "data/harmless/eval.parquet", "evaluation/prompts.parquet",
                  "seed_1/evaluation/mva/generations.parquet"]:
        pd.testing.assert_frame_equal(pd.read_parquet(run / table), pd.read_parquet(ref_run / table), obj=table)
    for target in MVA_TARGETS:
        relative = target.removeprefix("results/smoke/")
        pd.testing.assert_frame_equal(pd.read_parquet(run / relative), pd.read_parquet(ref_run / relative),
                                      rtol=1e-5, obj=relative)
    assert not list(run.rglob("*.tmp"))


@pytest.mark.slow
def test_a_corrupt_score_file_is_named_and_lost_tables_are_rebuilt(smoke_run, tmp_path):
    """Issue 15, cases 1 and 3: a corrupted finished score file fails the job that reads it, naming the file;
    Snakemake then removes that job's tables, and the default target still plans them (no false "Nothing to be
    done"); deleting the corrupt file and rerunning rebuilds everything."""
    import shutil

    reference, args = smoke_run
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir, symlinks=True)
    scores = workdir / "results/smoke/seed_1/evaluation/mva/scores_helpful.parquet"
    scores.write_bytes(scores.read_bytes()[: scores.stat().st_size // 2])  # truncated; new mtime: frontiers reruns
    failed = snakemake(*args, workdir=workdir)
    assert failed.returncode != 0
    log = (workdir / "results/smoke/logs/frontiers/main.log").read_text()
    assert f"{scores.relative_to(workdir)} is corrupt" in log
    planned = snakemake(*args, "-n", workdir=workdir)
    assert "Nothing to be done" not in planned.stdout + planned.stderr and "frontiers" in planned.stdout
    scores.unlink()
    rebuilt = snakemake(*args, workdir=workdir)
    assert rebuilt.returncode == 0, (rebuilt.stdout + rebuilt.stderr)[-3000:]
    assert (workdir / "results/smoke/tables/comparisons.parquet").is_file()


def test_data_files_are_inputs_of_their_data_jobs_and_unlock_needs_no_cores(tmp_path):
    """Issue 15, cases 4 and 8, planned only (the slow test below runs them): each value's data file is an input of
    its prepare_value_data job, so a replaced file (newer) reruns that job; ``--unlock`` runs without --cores."""
    root = write_smoke_data_root(tmp_path / "data", n=8)
    roots = f"data_roots=['{root}']"
    plan = snakemake("-n", "--cores", "1", "--configfile", str(SMOKE), "--config", roots, "--until", "data_summary",
                     workdir=tmp_path / "work")
    assert plan.returncode == 0, plan.stderr[-2000:]
    jobs = [job for job in plan.stdout.split("\n\n") if "rule prepare_value_data:" in job]
    inputs = {re.search(r"wildcards: value=(\w+)", job)[1]: re.search(r"input: (.*)", job)[1] for job in jobs}
    assert inputs.keys() == {"helpful", "harmless"}
    for value in inputs:
        assert str(root / f"hh-rlhf/{value}-base/test.jsonl.gz") in inputs[value].split(", ")
    unlock = snakemake("--unlock", "--configfile", str(SMOKE), "--config", roots, workdir=tmp_path / "work")
    assert unlock.returncode == 0, unlock.stderr[-2000:]


@pytest.mark.slow
def test_a_replaced_data_file_reruns_the_data_jobs_and_unlock_needs_no_cores(finished, tmp_path):
    """Issue 15, cases 4 and 8 (end to end: the data jobs run)."""
    import shutil

    workdir, args, root, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, symlinks=True)
    data = tmp_path / "data"
    shutil.copytree(root, data)
    roots = f"data_roots=['{data}']"
    # only file times decide here (the copied data root is another path, so params would differ)
    mtime = ["--rerun-triggers", "mtime", "--until", "data_summary"]
    assert snakemake(*args, "--config", roots, *mtime, workdir=copy).returncode == 0  # up to date with this root
    mtime.append("-n")
    before = snakemake(*args, "--config", roots, *mtime, workdir=copy)
    assert "prepare_value_data" not in before.stdout, before.stdout[-2000:]
    write_hh_jsonl_gz(data / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows(60, "helpful", seed=9))  # replaced
    after = snakemake(*args, "--config", roots, *mtime, workdir=copy)
    assert "prepare_value_data" in after.stdout
    unlock = snakemake("--unlock", "--configfile", str(SMOKE), "--config", roots, workdir=copy)
    assert unlock.returncode == 0, unlock.stderr[-2000:]


# --------------------------------------------------------------------------------------- 5. numerical faults


@pytest.fixture(scope="module")
def tiny_rm(tiny_model_dir):
    """A base model for reward-model training and scoring: the shared tiny Llama."""
    return tiny_model_dir


def test_nan_reward_model_loss_stops_training_naming_step_and_pairs(tiny_rm, tmp_path, monkeypatch):
    from mva_core.reward_trainer import CheckedRewardTrainer

    parent = CheckedRewardTrainer.__mro__[1]  # TRL's RewardTrainer: make its loss NaN
    monkeypatch.setattr(parent, "compute_loss", lambda self, model, inputs, *a, **k: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"reward-model loss is nan at global step 1 \(pair ids: \["):
        train_reward_model(tiny_rm, synthetic_pairs(8, seed=0), tmp_path / "rm", RewardModelSettings(epochs=1))
    assert not (tmp_path / "rm").exists()


def test_nan_reward_stops_scoring_naming_the_rows(tiny_rm, monkeypatch):
    scorer = RewardScorer.load(tiny_rm, RewardModelSettings())
    monkeypatch.setattr(RewardScorer, "_score_batch", lambda self, batch: [float("nan")] * len(batch))
    generations = pd.DataFrame({"point_id": ["p0"], "prompt_id": ["q0"], "response": ["hi"]})
    prompts = pd.DataFrame({"prompt_id": ["q0"], "prompt": [[{"role": "user", "content": "hello"}]]})
    with pytest.raises(NonFiniteRewardError, match="point_id=p0, prompt_id=q0"):
        score_generations(scorer, generations, prompts, "helpful")


# ------------------------------------------------------------------------------ 7. safe loading and paths


def test_pickled_weights_are_refused(tiny_rm, tmp_path):
    import shutil

    from transformers import AutoModelForSequenceClassification

    pickled = tmp_path / "pickled"  # the same model as a pickle checkpoint only
    shutil.copytree(tiny_rm, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(AutoModelForSequenceClassification.from_pretrained(tiny_rm, num_labels=1).state_dict(),
               pickled / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        RewardScorer.load(pickled, RewardModelSettings())


def test_remote_code_is_off_unless_configured():
    config = validate_config(yaml_config(SMOKE))
    assert config["base_model"]["trust_remote_code"] is False
    assert all(v["reward_model"]["trust_remote_code"] is False for v in config["values"].values())


@pytest.mark.parametrize("key, change", [
    ("values.helpful.sources[0].path", lambda c: c["values"]["helpful"]["sources"][0].update(path="/etc/passwd")),
    ("values.helpful.sources[0].path", lambda c: c["values"]["helpful"]["sources"][0].update(path="../../etc/x.json")),
    ("base_model.source", lambda c: c["base_model"].update(source="/opt/elsewhere/model")),
    ("values.harmless.reward_model.source", lambda c: c["values"]["harmless"]["reward_model"].update(source="../../rm")),
])
def test_config_paths_stay_inside_the_configured_roots(tmp_path, key, change):
    root = tmp_path / "data"
    write_hh_jsonl_gz(root / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows(4, "helpful"))
    write_hh_jsonl_gz(root / "hh-rlhf/harmless-base/test.jsonl.gz", hh_rows(4, "harmless"))
    config = validate_config({**yaml_config(SMOKE), "data_roots": [str(root)]})
    check_config_paths(config, tmp_path)  # the shipped smoke config passes
    change(config)
    with pytest.raises(ConfigError) as error:
        check_config_paths(config, tmp_path)
    assert f"config key '{key}'" in str(error.value)


def test_config_values_are_never_evaluated_as_code(tmp_path):
    config = yaml_config(SMOKE)
    config["run_name"] = "__import__('os').system('touch pwned')"
    with pytest.raises(ConfigError, match="config key 'run_name'"):
        validate_config(config)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("key, change", [
    ("evaluation.grid.lambdas[0]", lambda c: c["evaluation"]["grid"].update(lambdas=[float("nan"), 1.0])),
    ("evaluation.grid.lambdas[1]", lambda c: c["evaluation"]["grid"].update(lambdas=[0.0, float("inf")])),
    ("dpo.beta", lambda c: c["dpo"].update(beta=float("nan"))),
    ("dpo.learning_rate", lambda c: c["dpo"].update(learning_rate=float("inf"))),
    ("data.split.eval", lambda c: c["data"]["split"].update(eval=float("nan"))),
    ("evaluation.weightings[0][1]", lambda c: c["evaluation"].update(weightings=[[0.5, float("nan")]])),
    ("evaluation.reference_point[0]", lambda c: c["evaluation"].update(reference_point=[float("nan"), 0.0])),
    ("methods.mva.penalty.weight", lambda c: c["methods"]["mva"]["penalty"].update(weight=float("-inf"))),
])
def test_nan_and_inf_are_rejected_at_start_naming_the_key(key, change):
    config = yaml_config(SMOKE)
    change(config)
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}': is (nan|inf|-inf)"):
        validate_config(config)


def test_a_key_written_twice_in_a_config_file_is_rejected_naming_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("values:\n  helpful:\n    order: 1\n  harmless:\n    order: 2\n  helpful:\n    order: 3\n")
    with pytest.raises(ConfigError, match=r"key 'helpful' appears twice \(lines 2 and 6\)"):
        check_config_files([path])
    check_config_files([SMOKE, REPO / "config.yaml"])  # the shipped configs pass


def test_a_duplicate_key_stops_the_workflow_before_any_job(finished, tmp_path):
    workdir, args, root, _ = finished
    before = snapshot(workdir / "results")  # earlier tests of this module may have rerun data jobs
    (tmp_path / "twice.yaml").write_text("dpo: {beta: 0.1}\ndpo: {beta: 0.5}\n")
    result = snakemake(*args, str(tmp_path / "twice.yaml"), "--config", f"data_roots=['{root}']", workdir=workdir)
    assert result.returncode != 0 and "key 'dpo' appears twice (lines 1 and 2)" in result.stdout + result.stderr
    assert snapshot(workdir / "results") == before


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x"])
def test_run_name_must_be_one_plain_path_component(name):
    with pytest.raises(ConfigError, match="config key 'run_name'"):
        validate_config({**yaml_config(SMOKE), "run_name": name})


def yaml_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
