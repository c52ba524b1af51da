"""``evaluation.generation.jobs``: the grid split over several generate jobs per method and seed, merged before
scoring, gives the same generations and scores as one job, with sampling and several samples per prompt."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import snakemake, snakemake_env
from synthetic import write_placeholder_sources, write_smoke_data_root

from mva_core.combine import ValueMixer
from mva_core.generation import GenerationSettings, generate_grid, merge_parts
from mva_core.oracles import OracleScorer
from mva_core.reward_models import score_generations
from mva_core.rewards import seeded_rewards

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config/smoke.yaml"
SAMPLED = GenerationSettings(max_new_tokens=8, batch_size=4, do_sample=True, temperature=0.7, top_p=0.95, top_k=50,
                             samples_per_prompt=2, seed=11)
SPLIT = """evaluation:
  generation: {jobs: 3, do_sample: true, temperature: 0.7, samples_per_prompt: 2}
"""


def scores_of(generations: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """Both oracle values' scores of ``generations`` (a method column added), as the score jobs write them."""
    generations = generations.assign(method="mva")
    return pd.concat([score_generations(OracleScorer(name), generations, prompts, name)
                      for name in ("conciseness", "positive_share")], ignore_index=True)


def test_three_jobs_give_the_scores_of_one_job(tiny_tokenizer, tiny_llama, random_adapters):
    mixer = ValueMixer.attach(copy.deepcopy(tiny_llama), random_adapters)
    prompts = pd.DataFrame({"prompt_id": [f"q{i}" for i in range(4)],
                            "prompt": [[{"role": "user", "content": text}] for text in
                                       ["Hi", "What is the capital of France?", "Mix flour", "How do I fix a tire?"]]})
    points = pd.DataFrame({"point_id": ["sft", "a", "b"], "lam_care": [0.0, 1.0, 0.5], "lam_safe": [0.0, 0.5, 1.5]})
    one = generate_grid(mixer.model, tiny_tokenizer, mixer, prompts, points, SAMPLED, progress=False)
    parts = [generate_grid(mixer.model, tiny_tokenizer, mixer, prompts, points, SAMPLED, progress=False, part=i, parts=3)
             for i in range(3)]
    three = merge_parts(parts, prompts, points, SAMPLED.samples_per_prompt)
    pd.testing.assert_frame_equal(scores_of(three, prompts), scores_of(one, prompts))
    assert (one["sample"] == 1).sum() == len(one) // 2 and one.response.nunique() > len(one) // 4
    rewards = seeded_rewards(scores_of(one, prompts))
    assert rewards.rewards.shape == (1, 3, 2, 4)  # the two samples of a prompt are one entry: their mean


def plan(tmp_path: Path, overlay: str) -> list[dict]:
    """Every job of the smoke config with ``overlay`` (tests/plan_jobs.py)."""
    (tmp_path / "overlay.yaml").write_text(overlay)
    root = write_placeholder_sources(SMOKE, tmp_path / "placeholder_data")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests/plan_jobs.py"), str(tmp_path / "work"), json.dumps({"data_roots": [str(root)]}),
         str(SMOKE), str(tmp_path / "overlay.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=snakemake_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_plan_has_jobs_generate_jobs_per_method_and_seed_merged_before_scoring(tmp_path):
    jobs = plan(tmp_path, SPLIT)
    generate = [job for job in jobs if job["rule"] == "generate"]
    merges = {job["wildcards"]["method"]: job for job in jobs if job["rule"] == "merge_generations"}
    methods = {job["wildcards"]["method"] for job in jobs if job["rule"] == "score"}
    assert len(generate) == 3 * len(methods) and set(merges) == methods
    assert {job["wildcards"]["part"] for job in generate} == {"0", "1", "2"}
    mva = sorted((job for job in generate if job["wildcards"]["method"] == "mva"), key=lambda job: job["wildcards"]["part"])
    assert [job["output"] for job in mva] == [[f"results/smoke/seed_1/evaluation/mva/generation_parts/{i}.parquet"]
                                              for i in range(3)]
    assert [job["log"] for job in mva] == [[f"results/smoke/logs/generate/seed1/mva/part{i}.log"] for i in range(3)]
    assert merges["mva"]["output"] == ["results/smoke/seed_1/evaluation/mva/generations.parquet"]


@pytest.mark.slow
def test_a_run_split_over_three_generate_jobs_scores_as_one_job(tmp_path):
    """The smoke run up to mva's scores with one generate job, then again with three: the same scores tables; once
    merged, nothing is redone (the parts are kept, so a remerge never regenerates)."""
    data = write_smoke_data_root(tmp_path / "data")
    targets = [f"results/smoke/seed_1/evaluation/mva/scores_{value}.parquet" for value in ("helpful", "harmless")]
    tables = {}
    for jobs in (1, 3):
        (tmp_path / "overlay.yaml").write_text(SPLIT.replace("jobs: 3", f"jobs: {jobs}") + f"data_roots: ['{data}']\n")
        result = snakemake(*targets, "--cores", "2", "--configfile", str(SMOKE), str(tmp_path / "overlay.yaml"),
                           workdir=tmp_path / "work")
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        tables[jobs] = [pd.read_parquet(tmp_path / "work" / target) for target in targets]
        logs = sorted((tmp_path / "work/results/smoke/logs/generate/seed1/mva").glob("part*.log"))
        assert len(logs) >= jobs
    again = snakemake(*targets, "-n", "--configfile", str(SMOKE), str(tmp_path / "overlay.yaml"), workdir=tmp_path / "work")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr  # merged parts stay merged
    for one, three in zip(tables[1], tables[3]):
        pd.testing.assert_frame_equal(three, one)
        assert sorted(one["sample"].unique()) == [0, 1]
    generations = pd.read_parquet(tmp_path / "work/results/smoke/seed_1/evaluation/mva/generations.parquet")
    parts = tmp_path / "work/results/smoke/seed_1/evaluation/mva/generation_parts"
    assert sorted(p.name for p in parts.iterdir()) == ["0.parquet", "1.parquet", "2.parquet"]
    assert len(generations) == 2 * generations[["point_id", "prompt_id"]].drop_duplicates().shape[0]
