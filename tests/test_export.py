"""mva-export: a plain transformers model for one λ of a run, equal to the pipeline's mixer at that λ; every bad
argument refused in one line (exit 2) before any file is touched, and nothing of a run or a user's folder lost."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig
from synthetic import save_random_adapter
from transformers import AutoModelForCausalLM

from mva_core.combine import ValueMixer
from mva_core.config import validate_config
from mva_core.export import ExportError, export_model, main
from mva_core.run_config import run_config_text

REPO = Path(__file__).resolve().parents[1]
CONFIG = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
METHODS = {"mva": {"penalty": {"kind": "hsic", "weight": 10.0, "form": "lora_a", "sigma": 1.0}},
           "soup": {"penalty": {"kind": "none"}},
           "ortho": {"penalty": {"kind": "orthogonality", "weight": 1.0}},  # its vectors were never trained
           "modpo": {"type": "modpo", "penalty": {"kind": "none"}}}


def run_config(seed: int = 3) -> dict:
    """The smoke config as run ``r`` with training seed ``seed`` and the methods above."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    return validate_config({**config, "run_name": "r", "seed": seed, "methods": METHODS})


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama, tiny_model_dir):
    """results/r of a workdir: the policy model (the shared tiny one), the recorded config and value vectors as the
    pipeline lays them out (mva: only the second value has its own vector)."""
    workdir = tmp_path_factory.mktemp("work")
    run_dir = workdir / "results/r"
    shutil.copytree(tiny_model_dir, run_dir / "models/sft")
    (run_dir / "config.yaml").write_text(run_config_text(run_config()))
    model = copy.deepcopy(tiny_llama)  # the mixer below attaches to it
    vectors = run_dir / "seed_3/value_vectors"
    for i, folder in enumerate(["independent/helpful", "independent/harmless", "mva/harmless"]):
        save_random_adapter(model, CONFIG, vectors / folder, seed=i)
        metadata = {"stage": "value_vector", "start_model_dir": "results/r/models/sft", "settings": {}}
        if i == 0:  # the format written before the training harness
            metadata = {"sft_model_dir": "results/r/models/sft"}
        (vectors / folder / "metadata.json").write_text(json.dumps(metadata))
    return workdir, run_dir, model


@pytest.fixture
def own_run(run, tmp_path):
    """A copy of ``run`` that a test may try to damage: (workdir, run_dir)."""
    workdir = tmp_path / "work"
    shutil.copytree(run[0], workdir, symlinks=True)
    return workdir, workdir / "results/r"


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def export(capsys, run_dir: Path, out: Path, *extra: str, method: str = "mva", seed: str = "3",
           lambdas: tuple[str, ...] = ("helpful=0.7", "harmless=1.2")) -> tuple[int, str]:
    """``mva-export`` in-process: (exit status, stderr)."""
    argv = [str(run_dir), "--method", method, "--seed", seed, "--out", str(out), *extra]
    for item in lambdas:
        argv += ["--lambda", item]
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


def refused(status: int, err: str, *names: str) -> None:
    """Exit status 2 and one line naming each of ``names``."""
    assert status == 2, err
    assert err.strip().count("\n") == 0, err
    for name in names:
        assert name in err, err


def test_exported_model_equals_the_mixer_and_loads_from_anywhere(run, tmp_path):
    workdir, run_dir, model = run
    out = tmp_path / "exported"
    result = subprocess.run([sys.executable, "-m", "mva_core.export", str(run_dir), "--method", "mva", "--seed", "3",
                             "--lambda", "helpful=0.7", "--lambda", "harmless=1.2", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True)  # not the run's working directory
    assert result.returncode == 0, result.stderr[-2000:]
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    vectors = run_dir / "seed_3/value_vectors"
    mixer = ValueMixer.attach(model, {"helpful": vectors / "independent/helpful", "harmless": vectors / "mva/harmless"})
    input_ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), mixer.lambdas([0.7, 1.2]):
        expected = model(input_ids=input_ids).logits
    mixer.detach()
    with torch.no_grad():
        got = exported(input_ids=input_ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    card = json.loads((out / "mva_export.json").read_text())
    assert card["lambdas"] == {"helpful": 0.7, "harmless": 1.2}
    assert card["value_vectors"]["harmless"]["path"].endswith("mva/harmless")
    assert "λ_harmless = 1.2" in (out / "README.md").read_text()


def test_soup_uses_the_independent_vectors_and_bad_lambdas_are_named(run, tmp_path):
    workdir, run_dir, _ = run
    with pytest.raises(ExportError, match=r"no λ for harmless; give one per value"):
        export_model(run_dir, "soup", 3, {"helpful": 1.0}, tmp_path / "x")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        out = export_model(run_dir, "soup", 3, {"helpful": 1.0, "harmless": 0.0}, tmp_path / "soup")
    finally:
        os.chdir(previous)
    card = json.loads((out / "mva_export.json").read_text())
    assert card["value_vectors"]["harmless"]["path"].endswith("independent/harmless")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- issue 22, case 1: --out never loses data


def test_a_non_empty_out_is_refused_and_its_files_kept(own_run, tmp_path, capsys):
    _, run_dir = own_run
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    result = export(capsys, run_dir, out)
    assert files(out) == {"notes.txt": b"precious\n"}
    refused(*result, str(out), "not empty", "notes.txt")
    result = export(capsys, run_dir, out, "--force")  # --force replaces earlier exports only
    assert files(out) == {"notes.txt": b"precious\n"}
    refused(*result, "not an export", "mva_export.json")


@pytest.mark.parametrize("where", ["run", "results", "workdir", "vector", "policy", "inside run", "inside vector",
                                   "link to run", "other run", "beside run"])
def test_an_out_in_or_around_a_run_is_refused_even_with_force(own_run, tmp_path, capsys, where):
    workdir, run_dir = own_run
    other = workdir / "results/other"
    (other / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(run_dir)
    out = {"run": run_dir, "results": workdir / "results", "workdir": workdir,
           "vector": run_dir / "seed_3/value_vectors/mva/harmless", "policy": run_dir / "models/sft",
           "inside run": run_dir / "exported", "inside vector": run_dir / "seed_3/value_vectors/independent/x",
           "link to run": tmp_path / "link", "other run": other / "exported",
           "beside run": workdir / "results/new"}[where]  # a later run named 'new' would write into it
    out.mkdir(parents=True, exist_ok=True)
    (out / "mva_export.json").write_text("{}")  # looks like an earlier export: --force alone would replace it
    before = files(workdir)
    for force in [(), ("--force",)]:
        result = export(capsys, run_dir, out, *force)
        assert files(workdir) == before
        refused(*result, "outside it")
    assert not [p for p in out.resolve().parent.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_an_out_inside_a_policy_model_outside_the_run_is_refused(own_run, tmp_path, capsys):
    _, run_dir = own_run
    policy = shutil.copytree(run_dir / "models/sft", tmp_path / "policy")
    before = files(policy)
    refused(*export(capsys, run_dir, policy / "exported", "--policy", str(policy)), "inside the policy model")
    assert files(policy) == before


def test_force_replaces_an_earlier_export_atomically(own_run, tmp_path, capsys, monkeypatch):
    _, run_dir = own_run
    out = tmp_path / "model"
    assert export(capsys, run_dir, out)[0] == 0
    first = files(out)
    result = export(capsys, run_dir, out, lambdas=("helpful=0", "harmless=0"))
    assert files(out) == first
    refused(*result, "not empty", "--force")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("mva_core.combine.merge_explicit", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export(capsys, run_dir, out, "--force", lambdas=("helpful=0", "harmless=0"))
    assert files(out) == first  # a failed export leaves the old one, and no temporary folder beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "work"]
    monkeypatch.undo()
    assert export(capsys, run_dir, out, "--force", lambdas=("helpful=0", "harmless=0"))[0] == 0
    assert json.loads((out / "mva_export.json").read_text())["lambdas"] == {"helpful": 0.0, "harmless": 0.0}


# ---------------------------------------------------------------- issue 22, case 2: never the wrong model


@pytest.mark.parametrize("method, names", [
    ("mvaa", ["'mvaa'", "['mva', 'soup', 'ortho']", "modpo"]),  # a typo: not independent/ vectors under its name
    ("modpo", ["MODPO", "PeftModel.from_pretrained", "seed_3/modpo_vectors/modpo/w0", "models/sft",
               "['mva', 'soup', 'ortho']"]),
])
def test_an_unknown_or_modpo_method_is_refused_naming_the_choices(run, tmp_path, capsys, method, names):
    _, run_dir, _ = run
    result = export(capsys, run_dir, tmp_path / "out", method=method)
    assert not (tmp_path / "out").exists()
    refused(*result, *names)


def test_a_method_whose_own_vectors_are_missing_is_refused_not_replaced_by_independent_ones(run, tmp_path, capsys):
    _, run_dir, _ = run
    result = export(capsys, run_dir, tmp_path / "out", method="ortho")
    assert not (tmp_path / "out").exists()
    refused(*result, "value_vectors/ortho/harmless", "missing")


@pytest.mark.parametrize("lambdas, seed, names", [
    (("helpful=nan", "harmless=1"), "3", ["helpful=nan", "finite"]),
    (("helpful=1", "harmless=inf"), "3", ["harmless=inf", "finite"]),
    (("helpful=1", "harmless=1", "helpful=0.5"), "3", ["helpful is given twice", "1 and 0.5"]),
    (("helpful=1", "harmles=1"), "3", ["'harmles'", "['helpful', 'harmless']"]),
    (("helpful=1",), "3", ["no λ for harmless"]),
    (("helpful=1", "harmless=1"), "7", ["--seed 7", "seeds: [3]"]),
    (("helpful:1",), "3", ["VALUE=NUMBER"]),
])
def test_bad_lambdas_and_seeds_are_refused_in_one_line(run, tmp_path, capsys, lambdas, seed, names):
    _, run_dir, _ = run
    result = export(capsys, run_dir, tmp_path / "out", seed=seed, lambdas=lambdas)
    assert not (tmp_path / "out").exists()
    refused(*result, *names)


def test_a_run_without_a_recorded_config_needs_the_config_files(own_run, tmp_path, capsys):
    _, run_dir = own_run
    config = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").unlink()
    refused(*export(capsys, run_dir, tmp_path / "out"), "records no config", "--configfile")
    (tmp_path / "other.yaml").write_text(config.replace("run_name: r", "run_name: other"))
    refused(*export(capsys, run_dir, tmp_path / "out", "--configfile", str(tmp_path / "other.yaml")), "'other'")
    (tmp_path / "r.yaml").write_text(config)
    assert export(capsys, run_dir, tmp_path / "out", "--configfile", str(tmp_path / "r.yaml"))[0] == 0
