"""One source of truth for settings: each settings dataclass and its config-schema section have the same keys,
types and defaults, so a key added on one side only (or a default changed on one side) fails here."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest
import yaml

from mva_core.artifacts import config_hash
from mva_core.base_model import BaseModelSettings
from mva_core.config import validate_config
from mva_core.lora import LoraSettings
from mva_core.penalties import PenaltySettings
from mva_core.reward_models import RewardModelSettings
from mva_core.sft import SFTSettings
from mva_core.value_training import DPOSettings

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.schema.yaml").read_text())
SECTIONS = [  # settings class, schema path of its section, keys the workflow reads itself (not settings)
    (SFTSettings, ("properties", "sft"), {"enabled", "max_pairs"}),  # whether SFT runs, pairs per value
    (LoraSettings, ("properties", "lora"), set()),
    (DPOSettings, ("properties", "dpo"), set()),
    (PenaltySettings, ("$defs", "penalty"), set()),
    (RewardModelSettings, ("$defs", "reward_model"), set()),
    (BaseModelSettings, ("properties", "base_model"), set()),
]
RESOLVED_BY_THE_WORKFLOW = {"dtype"}  # null in the config = the compute.dtype policy, resolved before the dataclass
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def python_types(hint: object) -> set[str]:
    """JSON-schema type names a type hint allows."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(python_types(arg) for arg in typing.get_args(hint)))
    if typing.get_origin(hint) in (tuple, list):
        return {"array"}
    return {JSON_TYPES[hint]}


def schema_types(prop: dict) -> set[str]:
    if "oneOf" in prop:
        return set().union(*(schema_types(branch) for branch in prop["oneOf"]))
    declared = prop["type"]
    return {declared} if isinstance(declared, str) else set(declared)


def section(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for key in path:
        node = node[key]
    return node["properties"]


@pytest.mark.parametrize("settings_class,path,workflow_keys", SECTIONS, ids=lambda x: getattr(x, "__name__", ""))
def test_settings_dataclass_and_schema_section_agree(settings_class, path, workflow_keys):
    properties = section(path)
    fields = {f.name: f for f in dataclasses.fields(settings_class)}
    assert set(fields) == set(properties) - workflow_keys, (
        f"only in {settings_class.__name__}: {sorted(set(fields) - set(properties))}; "
        f"only in the schema: {sorted(set(properties) - workflow_keys - set(fields))}")
    hints = typing.get_type_hints(settings_class)
    for name, field in fields.items():
        prop = properties[name]
        expected_types = schema_types(prop)
        if name in RESOLVED_BY_THE_WORKFLOW:
            expected_types -= {"null"}
        assert python_types(hints[name]) == expected_types, f"{settings_class.__name__}.{name}: types differ"
        assert "default" in prop, f"schema key {name} has no default"
        if name not in RESOLVED_BY_THE_WORKFLOW:
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            assert default == prop["default"], f"{settings_class.__name__}.{name}: defaults differ"


def test_every_setting_can_be_set_from_the_config():
    """A validated config's sections build the settings (as the workflow scripts do), every key reaching them."""
    values = {"a": {"order": 1, "sources": [{"path": "a.json"}]}, "b": {"order": 2, "sources": [{"path": "b.json"}]}}
    defaults = validate_config({"values": values})
    for settings_class, path, workflow_keys in SECTIONS:
        if settings_class is PenaltySettings:
            continue  # its section sits under methods.<name>.penalty, checked by test_config
        name = path[-1]
        section_of = (lambda c: c["values"]["a"]["reward_model"]) if name == "reward_model" else (lambda c: c[name])
        built = settings_class(**{k: v for k, v in section_of(defaults).items()
                                  if k not in workflow_keys and k not in RESOLVED_BY_THE_WORKFLOW})
        assert config_hash(dataclasses.asdict(built)) == config_hash(dataclasses.asdict(settings_class()))
    changed = {"dpo": {"gradient_checkpointing": True}, "values": {**values, "a": {
        **values["a"], "reward_model": {"gradient_checkpointing": True, "save_steps": 7}}}}
    config = validate_config(changed)
    assert DPOSettings(**config["dpo"]).gradient_checkpointing
    reward_model = RewardModelSettings(**{**config["values"]["a"]["reward_model"], "dtype": "float32"})
    assert reward_model.gradient_checkpointing and reward_model.save_steps == 7


def test_the_check_sees_a_field_added_on_one_side():
    extended = dataclasses.make_dataclass("Extended", [("new_knob", int, dataclasses.field(default=1))],
                                          bases=(DPOSettings,), frozen=True)
    with pytest.raises(AssertionError, match="only in Extended: \\['new_knob'\\]"):
        test_settings_dataclass_and_schema_section_agree(extended, ("properties", "dpo"), set())
