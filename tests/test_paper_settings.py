"""The paper configs decode as the authors' code did (sampling as Llama-2-7b-hf's generation config), sized for a
7B model (token budget, split generation, runtimes from docs/cluster.md's estimate); the CPU default stays greedy;
every [guess] tag of the paper configs is in docs/cluster.md's table and the reverse."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import snakemake

from mva_core.config import validate_config
from mva_core.config_errors import ConfigError
from mva_core.generation import GenerationSettings
from mva_core.workload import evaluation_workload

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted((REPO / "config").glob("paper_*.yaml"))
GUESS_ROW = re.compile(r"^\| `(paper_\w+\.yaml)` \| `([^`]+)` \| `([^`]+)` \| (.+) \|$", re.M)


def load(path: Path) -> dict:
    return validate_config(yaml.safe_load(path.read_text()))


def settings_of(config: dict) -> GenerationSettings:
    """The GenerationSettings the generate rule builds (rules/evaluation.smk: every key but jobs)."""
    return GenerationSettings(**{k: v for k, v in config["evaluation"]["generation"].items() if k != "jobs"})


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_the_paper_configs_sample_as_llama_2s_generation_config(path):
    config = load(path)
    settings = settings_of(config)
    assert (settings.do_sample, settings.temperature, settings.top_p, settings.top_k) == (True, 0.6, 0.9, 50)
    assert (settings.max_new_tokens, settings.samples_per_prompt) == (200, 1)
    # sized for a 7B model on a 40 GB GPU: a batch's KV cache (0.5 MiB per token) at most 16 GiB
    assert settings.max_batch_tokens * 0.5 / 1024 <= 16 and config["evaluation"]["generation"]["jobs"] > 1
    assert {"train_value_vector", "generate", "score"} <= set(config["compute"]["runtime"])


def test_the_cpu_default_stays_greedy_and_unsplit():
    config = load(REPO / "config.yaml")
    settings = settings_of(config)
    assert not settings.do_sample and settings.samples_per_prompt == 1 and settings.max_batch_tokens is None
    assert config["evaluation"]["generation"]["jobs"] == 1 and config["compute"]["runtime"] == {}


def test_several_samples_need_sampling_and_multiply_the_workload():
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["evaluation"]["generation"].update(samples_per_prompt=3)
    with pytest.raises(ConfigError, match="evaluation.generation.samples_per_prompt.*do_sample is false"):
        validate_config(config)
    config["evaluation"]["generation"].update(do_sample=True)
    workload = evaluation_workload(validate_config(config))
    assert workload.generations_per_seed == 3 * workload.n_points * workload.prompts
    assert "x 6 prompts x 3 samples = " in workload.summary(1, None)
    with pytest.raises(ConfigError, match=r"prompts x 3 samples\)"):
        workload.check(workload.generations_per_seed - 1)


def guess_table() -> list[tuple[str, str, str, str]]:
    text = (REPO / "docs/cluster.md").read_text()
    section = text[text.index("## Guessed settings in the paper configs"):]
    return GUESS_ROW.findall(section)


def resolve(config: dict, key: str):
    """The value at a dotted key with list indices, e.g. ``values.helpful.sources[0].view``."""
    value = config
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_every_guess_is_tagged_in_the_config_and_listed_in_docs(path):
    rows = [row for row in guess_table() if row[0] == path.name]
    setting_lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert len(rows) == sum(line.count("[guess]") for line in setting_lines) >= 4
    raw = yaml.safe_load(path.read_text())
    for _, key, value, rests_on in rows:
        assert yaml.safe_load(value) == resolve(raw, key), (path.name, key)
        assert len(rests_on) > 20  # it says what the guess rests on
    for key in ("values.helpful.sources[0].path", "values.helpful.reward_model.source") if "hh" in path.stem else ():
        assert key in [row[1] for row in rows]  # the named guesses: subsets, reward models, split
    assert "data.split" in [row[1] for row in rows]


def test_the_paper_runtimes_reach_the_jobs(tmp_path):
    """A dry run of config/paper_hh.yaml: 4 generate jobs per method with the config's runtime, merged per method."""
    result = snakemake("-n", "--configfile", str(REPO / "config/paper_hh.yaml"), workdir=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = result.stdout + result.stderr
    assert re.search(r"^generate\s+8$", out, re.M) and re.search(r"^merge_generations\s+2$", out, re.M)
    jobs = out.split("rule ")
    generate = [job for job in jobs if job.startswith("generate:")]
    training = [job for job in jobs if job.startswith("train_value_vector:")]
    assert generate and all("runtime=150," in job for job in generate)
    assert training and all("runtime=720," in job for job in training)
