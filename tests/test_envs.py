"""envs/mva.yaml (for --sdm conda) pins exactly what pyproject.toml pins."""
from __future__ import annotations

import tomllib

import yaml
from conftest import REPO


def test_conda_env_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {line.split("#")[0].strip() for line in project}
    env = yaml.safe_load((REPO / "envs/mva.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins <= set(pip), sorted(pins - set(pip))
