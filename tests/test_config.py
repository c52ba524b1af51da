"""Schema validation and cross-field checks reject bad configs, naming the key."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mva_core.config import ConfigError, validate_config, value_dpo_settings, value_order
from mva_core.methods import MethodPlan, method_for

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


def test_value_dpo_overrides_apply_to_that_value_only():
    config = validate_config({"dpo": {"learning_rate": 2e-3, "epochs": 2},
                              "values": {"a": {"order": 1, "sources": [{"path": "x.json"}]},
                                         "b": {"order": 2, "sources": [{"path": "y.json"}],
                                               "dpo": {"learning_rate": 4e-3}}}})
    assert config["values"]["b"]["dpo"] == {"learning_rate": 4e-3}  # no schema defaults filled into the override
    a, b = value_dpo_settings(config, "a", seed=7), value_dpo_settings(config, "b", seed=7)
    assert (a["learning_rate"], b["learning_rate"]) == (2e-3, 4e-3)
    assert a["epochs"] == b["epochs"] == 2 and a["seed"] == b["seed"] == 7
    assert {k: v for k, v in a.items() if k != "learning_rate"} == {k: v for k, v in b.items() if k != "learning_rate"}


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
    # A tuple: the message names the key and, where a choice is wrong, the allowed values.
    (lambda c: c["dpo"].update(batch_size="four"), ("config key 'dpo.batch_size'", "integer")),
    (lambda c: c.update(seed=-1), ("config key 'seed'",)),
    (lambda c: c["lora"].update(dropout=1.0), ("config key 'lora.dropout'",)),
    (lambda c: c["dpo"].update(warmup_ratio=1.0), ("config key 'dpo.warmup_ratio'",)),
    (lambda c: c["values"]["helpful"].update(dpo={"batch_size": 8}), ("config key 'values.helpful.dpo'", "batch_size")),
    (lambda c: c["values"]["helpful"].update(dpo={"learning_rate": 0}), ("config key 'values.helpful.dpo.learning_rate'",)),
    (lambda c: c.update(values={}), ("config key 'values'", "at least 2 required")),
    (lambda c: c["values"]["helpful"].update(sources=[]), ("config key 'values.helpful.sources'", "at least 1 required")),
    (lambda c: c["values"]["helpful"]["sources"][0].update(format="pku"),
     ("config key 'values.helpful.sources[0].view'", "['better', 'safer']")),
    (lambda c: c["evaluation"]["grid"].update(lambdas=[]), ("config key 'evaluation.grid.lambdas'",)),
    (lambda c: c["evaluation"]["grid"].update(type="simplex", n_points=0), ("config key 'evaluation.grid.n_points'",)),
    (lambda c: c["evaluation"].setdefault("generation", {}).update(batch_size=0),
     ("config key 'evaluation.generation.batch_size'",)),
    (lambda c: c["evaluation"].update(weightings=[]), ("config key 'evaluation.weightings'",)),
    (lambda c: c["evaluation"].update(selection_weightings=[[1.0, 0.0, 0.0]]),
     ("config key 'evaluation.selection_weightings[0]'", "2 non-negative weights")),
    (lambda c: c["evaluation"].update(selection_weightings=[[0.0, 0.0]]),
     ("config key 'evaluation.selection_weightings[0]'", "not all 0")),
    (lambda c: c["evaluation"].update(selection_fraction=1.0), ("config key 'evaluation.selection_fraction'",)),
    (lambda c: c["methods"]["mva"].update(type="nosuch"),
     ("config key 'methods.mva.type'", "allowed values: ['grid', 'single', 'expo', 'modpo', 'replicate', 'planted', 'projection']")),
    (lambda c: c["methods"]["mva"]["penalty"].update(sigma="nosuch"),
     ("config key 'methods.mva.penalty.sigma'", "a number > 0 or one of ['median']")),
    (lambda c: c["evaluation"].update(win_rate_target="nosuch"),
     ("config key 'evaluation.win_rate_target'", "allowed values: [", "'mva'")),
    (lambda c: c["evaluation"].update(equivalence_margins={"helpfull": 1.0}),
     ("config key 'evaluation.equivalence_margins.helpfull'", "'hypervolume'")),
    (lambda c: c["evaluation"].update(equivalence_margins={"helpful": 0}), ("config key 'evaluation.equivalence_margins",)),
    (lambda c: c["evaluation"].update(primary_rows=[{"table": "efficacy", "metric": "hypervolume"}]),
     ("config key 'evaluation.primary_rows[0].metric'", "not a column of the efficacy table")),
    (lambda c: c["evaluation"].update(primary_rows=[{"table": "comparisons", "value": "kind"}]),
     ("config key 'evaluation.primary_rows[0].value'", "'kind' is not a value")),
    (lambda c: c["evaluation"].update(primary_rows=[{"metric": "hypervolume"}]), ("config key 'evaluation.primary_rows[0]'",)),
    (lambda c: (c["values"].update(third={"order": 3, "sources": [{"path": "x.json"}]}),
                c["methods"].update(m={"type": "modpo", "penalty": {"kind": "none"}})),
     ("config key 'evaluation.weightings[0]'", "3 non-negative weights")),
    (lambda c: c.setdefault("compute", {}).update(device="cpu", gpus_per_job=1),
     ("config key 'compute.device'", "gpus_per_job: 0")),
    (lambda c: c.setdefault("compute", {}).update(device="gpu"), ("config key 'compute.device'", "['auto', 'cpu', 'cuda']")),
]


@pytest.mark.parametrize("mutate,culprit", BAD, ids=[b[1] if isinstance(b[1], str) else b[1][0] for b in BAD])
def test_bad_configs_fail_naming_the_key(mutate, culprit):
    config = copy.deepcopy(load(REPO / "config/hh_cpu.yaml"))
    mutate(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    for text in (culprit,) if isinstance(culprit, str) else culprit:
        assert text in str(err.value)


TYPED = {"type", "enum", "const", "oneOf", "anyOf", "$ref"}
UNBOUNDED_NUMBERS = {  # any real is meaningful here (lambda < 0 or > 1 extrapolates; references are in reward units)
    "methods.*.lambdas[]", "evaluation.grid.lambdas[]", "evaluation.grid.points[][]", "evaluation.grid.low",
    "evaluation.grid.high", "evaluation.reference_point[]", "evaluation.primary_rows[].lambda",
}


def schema_nodes(node, path=""):
    """(path, subschema, is a named key) for every subschema under properties, items, additionalProperties,
    oneOf/anyOf/allOf and $defs."""
    if not isinstance(node, dict):
        return
    for name, sub in node.get("properties", {}).items():
        key = f"{path}.{name}".lstrip(".")
        yield key, sub, True
        yield from schema_nodes(sub, key)
    for child, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        if isinstance(node.get(child), dict):
            yield path + suffix, node[child], False
            yield from schema_nodes(node[child], path + suffix)
    for combinator in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(combinator, []):
            yield path, sub, False
            yield from schema_nodes(sub, path)
    for name, sub in node.get("$defs", {}).items():
        yield from schema_nodes(sub, f"$defs.{name}")


def test_schema_documents_every_key():
    nodes = list(schema_nodes(load(REPO / "config" / "config.schema.yaml")))
    keys = {path for path, _, named in nodes if named}
    assert {"dpo.learning_rate", "evaluation.generation.batch_size", "$defs.penalty.sigma", "values.*.sources"} <= keys
    assert not [path for path, sub, named in nodes if named and not sub.get("description")], "keys without a description"
    assert not [path for path, sub, _ in nodes if not TYPED & set(sub)], "subschemas without type/enum/oneOf/anyOf/$ref"
    numeric = [(path, sub) for path, sub, _ in nodes if {"number", "integer"} & set(
        sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")])]
    unbounded = {path for path, sub in numeric if not {"minimum", "exclusiveMinimum"} & set(sub)}
    assert unbounded == UNBOUNDED_NUMBERS, "numeric keys without a lower bound"


def test_chains_share_unpenalised_vectors():
    config = validate_config(load(REPO / "config/hh_cpu.yaml"))
    assert method_for("mva", config).vector_chain("helpful") == "independent"
    assert method_for("mva", config).vector_chain("harmless") == "mva"
    assert method_for("soup", config).vector_chain("harmless") == "independent"
    assert MethodPlan.of(config).vector_job("mva", "harmless").frozen_values == ("helpful",)
    assert MethodPlan.of(config).vector_job("independent", "harmless").frozen_values == ()
