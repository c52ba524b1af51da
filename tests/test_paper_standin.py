"""The paper path on a CPU (issue 16): config/paper_hh.yaml end to end with its hub artifacts swapped for local
stand-ins of the same architectures and formats (a tiny random Llama without a chat template for Llama-2-7B, tiny
random GPT-2 sequence classifiers for the two Ray2333 reward models, local HH test files for the train files) and its
sizes shrunk; everything else (prompt format, dtype policy, reward-model input format, methods, penalty) as in the
config."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake
from synthetic import write_smoke_data_root
from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

from mva_core.base_model import HH_TRANSCRIPT_TEMPLATE
from mva_core.tiny import build_tiny_llama, build_tiny_tokenizer

SHRUNK = {
    "data": {"max_pairs": {"dpo_train": 8, "rm_train": 8, "eval": 16}},
    "dpo": {"epochs": 1, "batch_size": 2, "max_length": 64, "max_prompt_length": 32, "save_steps": 4},
    "lora": {"r": 4, "alpha": 8},
    "evaluation": {"prompts_per_value": 4, "grid": {"lambdas": [0.5, 1.0]}, "bootstrap": 50,
                   "generation": {"max_new_tokens": 8, "batch_size": 16}},
    "compute": {"gpus_per_job": 0, "mem_mb": 2000},
}


def standins(root):
    """Local directories standing in for the config's hub models: {hub id: path}."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None  # Llama-2-7b-hf has none
    policy = root / "Llama-2-7b-hf"
    build_tiny_llama(tokenizer).save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    found = {"meta-llama/Llama-2-7b-hf": policy}
    for i, name in enumerate(["Ray2333/gpt2-large-helpful-reward_model", "Ray2333/gpt2-large-harmless-reward_model"]):
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=2, n_head=2, num_labels=1,
                            pad_token_id=tokenizer.pad_token_id)
        folder = root / name.split("/")[1]
        GPT2ForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        found[name] = folder
    return found


def shrink(config: dict, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            shrink(config[key], value)
        else:
            config[key] = value


@pytest.mark.slow
def test_paper_hh_config_runs_end_to_end_on_local_standins(tmp_path):
    data_root = write_smoke_data_root(tmp_path / "data")
    models = standins(tmp_path / "models")
    config = yaml.safe_load((REPO / "config/paper_hh.yaml").read_text())
    config["data_roots"], config["model_roots"] = [str(data_root)], [str(tmp_path / "models")]
    config["base_model"]["source"] = str(models[config["base_model"]["source"]])
    config["base_model"]["revision"] = None  # the hub commit of Llama-2-7b-hf, not of the stand-in
    for value in config["values"].values():
        source = value["sources"][0]  # hh-rlhf/<subset>/train.jsonl.gz: the local stand-ins are test files
        value["sources"] = [{**source, "path": source["path"].replace("/train.jsonl.gz", "/test.jsonl.gz")}]
        value["reward_model"]["source"] = str(models[value["reward_model"]["source"]])
    shrink(config, SHRUNK)
    (tmp_path / "paper_standin.yaml").write_text(yaml.safe_dump(config))

    result = snakemake("--cores", "2", "--configfile", str(tmp_path / "paper_standin.yaml"), workdir=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    run = tmp_path / "results/paper_hh"
    tokenizer = AutoTokenizer.from_pretrained(run / "models/base")
    assert tokenizer.chat_template == HH_TRANSCRIPT_TEMPLATE  # the prompt format every stage renders with
    generations = pd.read_parquet(run / "seed_60/evaluation/mva/generations.parquet")
    assert not generations["response"].str.contains("\n\nHuman:").any()
    for table in ["efficacy", "interference", "comparisons", "frontiers"]:
        assert len(pd.read_parquet(run / f"tables/{table}.parquet")) > 0, table
    accuracy = json.loads((run / "reward_models/accuracy_helpful.json").read_text())
    assert accuracy["n"] > 0 and accuracy["check"] in ("better than chance", "not distinguishable from chance")
    assert "Values ['harmless', 'helpful'] are judged by learned reward models" in (run / "summary.md").read_text()
