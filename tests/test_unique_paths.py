"""Every job of a plan has its own log, benchmark and checkpoint directory, and Snakemake reads each of its paths
back to that job alone, for names chosen to collide (issue 22, item 5): values ``harmless`` and ``dw_harmless`` with
methods ``mva`` and ``mva_dw`` (joined with ``_``, score and value-vector jobs shared ``seed1_mva_dw_harmless``), the
reserved chain ``independent`` beside a method ``independent_dw``, and seeds 1 and 11; the same for the vectors
computed without training (issue 24: projections ``proj``, ``proj_dw``; a replicate ``rep`` and a vector planted in it,
``rep_dw``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from conftest import snakemake_env
from synthetic import write_placeholder_sources

REPO = Path(__file__).resolve().parents[1]
RUN = "results/smoke"
COLLIDING = """seeds: [1, 11]
values:
  dw_harmless:
    order: 3
    sources: [{path: hh-rlhf/harmless-base/test.jsonl.gz, max_rows: 400}]
    reward_model: {source: train, train_batch_size: 8, batch_size: 16, max_length: 256}
methods:
  independent_dw: {penalty: {kind: hsic, weight: 10.0, form: delta_w, sigma: median}}
  rep: {type: replicate, penalty: {kind: none}}
  rep_dw: {type: planted, of: rep, c: 0.5}
  proj: {type: projection}
  proj_dw: {type: projection, of: rep_dw, sides: columns}
evaluation:
  weightings: [[0.4, 0.3, 0.3]]
"""


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> list[dict]:
    """Every job of the smoke config with the colliding names added (tests/plan_jobs.py)."""
    tmp = tmp_path_factory.mktemp("colliding")
    (tmp / "colliding.yaml").write_text(COLLIDING)
    root = write_placeholder_sources(REPO / "config/smoke.yaml", tmp / "placeholder_data")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests/plan_jobs.py"), str(tmp / "work"), json.dumps({"data_roots": [str(root)]}),
         str(REPO / "config/smoke.yaml"), str(tmp / "colliding.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=snakemake_env())
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads(line) for line in result.stdout.splitlines()]
    planned = {(job["rule"], *job["wildcards"].values()) for job in jobs}
    for seed in ["1", "11"]:  # the pairs whose paths were one
        for rule, a, b in [("score", "mva", "mva_dw"), ("train_value_vector", "mva", "mva_dw"),
                           ("train_value_vector", "independent", "independent_dw"),
                           ("project_value_vector", "proj", "proj_dw"), ("train_value_vector", "rep", "rep"),
                           ("plant_value_vector", "rep_dw", "rep_dw")]:
            assert {(rule, seed, a, "dw_harmless"), (rule, seed, b, "harmless")} <= planned
        generate = {job[:3] for job in planned if job[0] == "generate"}  # (rule, seed, method) of every part
        assert {("generate", seed, m) for m in ("rep", "rep_dw", "proj", "proj_dw")} <= generate
        assert {("decorrelation_table", seed, s) for s in ("rep", "rep_dw", "proj", "proj_dw", "independent")} <= planned
    return jobs


def _job(job: dict) -> str:
    return f"{job['rule']} {job['wildcards']}"


def _paths(job: dict) -> dict[str, list[str]]:
    dirs = job["dirs"]
    return {"logs": job["log"], "benchmarks": [job["benchmark"]] if job["benchmark"] else [],
            "checkpoints": [path for name, path in dirs.items() if name != "tracking_dir"],
            "tracking": [dirs["tracking_dir"]] if "tracking_dir" in dirs else []}


def test_every_log_benchmark_and_checkpoint_dir_lies_in_its_rules_folder(jobs):
    """``<run>/<kind>/<rule>/``: jobs of two rules never meet, whatever their wildcards."""
    for job in jobs:
        for kind, paths in _paths(job).items():
            for path in paths:
                assert path.startswith(f"{RUN}/{kind}/{job['rule']}/"), (_job(job), path)


def test_every_log_benchmark_and_checkpoint_dir_belongs_to_one_job_and_lies_in_no_other(jobs):
    owners: dict[PurePosixPath, str] = {}
    for job in jobs:
        for paths in _paths(job).values():
            for path in paths:
                other = owners.setdefault(PurePosixPath(path), _job(job))
                assert other == _job(job), f"{path}: {other} and {_job(job)}"
    assert len(owners) > 300
    for path, owner in owners.items():  # a job deletes its checkpoint dir when done: none may hold another's files
        nested = [owners[parent] for parent in path.parents if parent in owners]
        assert not nested, f"{path} of {owner} lies inside the path of {nested}"


def test_snakemake_reads_every_output_log_and_benchmark_back_to_its_own_job_alone(jobs):
    """The wildcard constraints (rules/common.smk) leave no path two readings: each output, log and benchmark
    matches the patterns of its own rule only, giving back its own wildcards; no rule claims a checkpoint dir."""
    for job in jobs:
        for path, producers in job["producers"].items():
            expected = [] if path in job["dirs"].values() else [[job["rule"], job["wildcards"]]]
            assert producers == expected, (_job(job), path)


def test_every_training_job_keeps_its_tracking_files_beside_not_inside_its_checkpoints(jobs):
    """Config key ``tracking`` writes to ``<run>/tracking/<rule>/<wildcards>`` (kept), not into the checkpoint dir
    (deleted when the job succeeds)."""
    training = [job for job in jobs if "tracking_dir" in job["dirs"]]
    rules = {"sft", "train_reward_model", "train_value_vector", "train_modpo_vector"}  # every TrainingJob
    assert {job["rule"] for job in training} == rules
    for job in training:
        checkpoints, tracking = job["dirs"]["checkpoint_dir"], job["dirs"]["tracking_dir"]
        assert tracking == checkpoints.replace(f"{RUN}/checkpoints/", f"{RUN}/tracking/", 1) != checkpoints, _job(job)
