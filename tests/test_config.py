"""Schema validation and cross-field checks reject bad configs, naming the key."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mva_core.config import ConfigError, validate_config, value_order, vector_chain, vector_job

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([REPO / "config.yaml", *(p for p in (REPO / "config").glob("*.yaml") if "schema" not in p.name)])


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = validate_config(load(path))
    assert len(value_order(config)) >= 2
    assert config["dpo"]["beta"] > 0


def test_defaults_are_filled():
    config = validate_config({"values": {"a": {"order": 1, "sources": [{"path": "x.json"}]},
                                         "b": {"order": 2, "sources": [{"path": "y.json"}]}}})
    assert config["methods"]["mva"]["penalty"] == {
        "kind": "hsic", "weight": 10.0, "form": "lora_a", "sigma": 1.0, "normalization": "n2", "max_rows": 256, "modules": None,
    }
    assert config["values"]["a"]["reward_model"]["source"] == "train"
    assert config["data"]["split"] == {"dpo_train": 0.6, "rm_train": 0.3, "eval": 0.1}


BAD = [
    (lambda c: c["dpo"].update(lerning_rate=1e-4), "lerning_rate"),
    (lambda c: c["dpo"].update(learning_rate=-1.0), "learning_rate"),
    (lambda c: c["dpo"].update(batch_size=0), "batch_size"),
    (lambda c: c.update(values={"helpful": c["values"]["helpful"]}), "values"),
    (lambda c: c["values"]["helpful"].pop("sources"), "sources"),
    (lambda c: c["values"]["harmless"].update(order=1), "order"),
    (lambda c: c["methods"].update(bogus={"penalty": {"kind": "magic"}}), "magic"),
    (lambda c: c["methods"].update(independent={"penalty": {"kind": "none"}}), "independent"),
    (lambda c: c["evaluation"]["grid"].update(type="list", points=[]), "evaluation.grid.points"),
    (lambda c: c["evaluation"].update(weightings=[[1.0]]), "evaluation.weightings[0]"),
    (lambda c: c["evaluation"].update(win_rate_target="nope"), "win_rate_target"),
    (lambda c: c["data"]["split"].update(dpo_train=0.9), "data.split"),
]


@pytest.mark.parametrize("mutate,culprit", BAD, ids=[b[1] for b in BAD])
def test_bad_configs_fail_naming_the_key(mutate, culprit):
    config = copy.deepcopy(load(REPO / "config.yaml"))
    mutate(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert culprit in str(err.value)


def test_chains_share_unpenalised_vectors():
    config = validate_config(load(REPO / "config.yaml"))
    assert vector_chain(config, "mva", "helpful") == "independent"
    assert vector_chain(config, "mva", "harmless") == "mva"
    assert vector_chain(config, "soup", "harmless") == "independent"
    assert vector_job(config, "mva", "harmless").frozen_values == ("helpful",)
    assert vector_job(config, "independent", "harmless").frozen_values == ()
