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
from peft import AutoPeftModelForCausalLM, LoraConfig, PeftModel
from safetensors import safe_open
from synthetic import save_random_adapter
from transformers import AutoModelForCausalLM, PreTrainedModel

from mva_core.artifacts import file_sha256
from mva_core.combine import ValueMixer
from mva_core.config import validate_config
from mva_core.export import ExportError, export_model, main
from mva_core.run_config import run_config_text

REPO = Path(__file__).resolve().parents[1]
CONFIG = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
MVA_CONFIG = LoraConfig(r=2, lora_alpha=3, use_rslora=True, target_modules=["q_proj", "k_proj", "o_proj"])
"""mva's own harmless vector: another rank, rsLoRA scaling and modules (k, o) the helpful vector lacks."""
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
    pipeline lays them out (mva: only the second value has its own vector, of another shape)."""
    workdir = tmp_path_factory.mktemp("work")
    run_dir = workdir / "results/r"
    shutil.copytree(tiny_model_dir, run_dir / "models/sft")
    (run_dir / "config.yaml").write_text(run_config_text(run_config()))
    model = copy.deepcopy(tiny_llama)  # the mixer below attaches to it
    vectors = run_dir / "seed_3/value_vectors"
    for i, folder in enumerate(["independent/helpful", "independent/harmless", "mva/harmless"]):
        save_random_adapter(model, MVA_CONFIG if folder.startswith("mva/") else CONFIG, vectors / folder, seed=i)
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


# ---------------------------------------------------------------- issue 25: hand-off (dtype, in place, LoRA, card)


def logits_of(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=input_ids).logits


def weight_dtypes(folder: Path) -> set[str]:
    """The dtypes of every tensor of a written model (from the safetensors header)."""
    with safe_open(folder / "model.safetensors", "pt") as weights:
        return {str(weights.get_slice(name).get_dtype()) for name in weights.keys()}


def front_matter(card: Path) -> dict:
    """The YAML metadata block of a model card."""
    text = card.read_text()
    assert text.startswith("---\n"), text[:200]
    return yaml.safe_load(text.split("---\n")[1])


INPUT_IDS = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(0))


def test_as_lora_is_one_peft_adapter_equal_to_the_merged_export(run, tmp_path, capsys):
    _, run_dir, _ = run
    assert export(capsys, run_dir, tmp_path / "merged")[0] == 0
    assert export(capsys, run_dir, tmp_path / "lora", "--as-lora")[0] == 0
    config = json.loads((tmp_path / "lora/adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (4 + 2, 4 + 2, False)  # PEFT's scale: 1
    assert config["base_model_name_or_path"] == str((run_dir / "models/sft").resolve())
    merged = logits_of(AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32), INPUT_IDS)
    policy = AutoModelForCausalLM.from_pretrained(run_dir / "models/sft", dtype=torch.float32)
    plain_peft = logits_of(PeftModel.from_pretrained(policy, tmp_path / "lora"), INPUT_IDS)
    torch.testing.assert_close(plain_peft, merged, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_of(AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora"), INPUT_IDS),
                               merged, atol=1e-5, rtol=0)  # the adapter names its base: it loads on its own
    unchanged = logits_of(AutoModelForCausalLM.from_pretrained(run_dir / "models/sft"), INPUT_IDS)
    assert (merged - unchanged).abs().max() > 1e-3  # λ changed the model
    card = front_matter(tmp_path / "lora/README.md")
    assert (card["library_name"], card["lora_rank"], card["dtype"]) == ("peft", 6, "float32")
    assert "lora" in card["tags"]


def test_the_export_keeps_the_policy_dtype_unless_told(own_run, tmp_path, capsys, tiny_llama):
    _, run_dir = own_run
    assert export(capsys, run_dir, tmp_path / "fp32")[0] == 0
    assert weight_dtypes(tmp_path / "fp32") == {"F32"}
    assert export(capsys, run_dir, tmp_path / "to_bf16", "--dtype", "bfloat16")[0] == 0
    assert weight_dtypes(tmp_path / "to_bf16") == {"BF16"}
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32").state_dict()
    policy = tiny_llama.state_dict()
    for name, weight in AutoModelForCausalLM.from_pretrained(tmp_path / "to_bf16", dtype="auto").state_dict().items():
        delta = merged[name] - policy[name]  # the policy is loaded in bf16, the fp32 sum W + Σ λ ΔW cast once
        expected = (policy[name].to(torch.bfloat16).float() + delta).to(torch.bfloat16)
        torch.testing.assert_close(weight, expected, atol=1e-6, rtol=2 ** -7)
    bf16_policy = copy.deepcopy(tiny_llama).to(torch.bfloat16)
    bf16_policy.save_pretrained(run_dir / "models/sft")  # the policy as a bf16 run saves it
    assert export(capsys, run_dir, tmp_path / "bf16")[0] == 0
    assert weight_dtypes(tmp_path / "bf16") == {"BF16"}
    assert json.loads((tmp_path / "bf16/mva_export.json").read_text())["dtype"] == "bfloat16"
    assert front_matter(tmp_path / "bf16/README.md")["dtype"] == "bfloat16"
    assert export(capsys, run_dir, tmp_path / "bf16_to_fp32", "--dtype", "float32")[0] == 0
    assert weight_dtypes(tmp_path / "bf16_to_fp32") == {"F32"}
    status, err = export(capsys, run_dir, tmp_path / "bad", "--dtype", "float8")
    assert status == 2 and "--dtype" in err and "float8" in err and not (tmp_path / "bad").exists()


def test_the_export_merges_into_the_one_model_it_loads_and_leaves_the_policy_intact(own_run, tmp_path, capsys,
                                                                                  monkeypatch):
    """No second copy of the model (no deep copy): the model saved is the model loaded, merged in place; the policy's
    files, which the loaded weights may map from disk, are unchanged."""
    _, run_dir = own_run
    policy_files = files(run_dir / "models/sft")
    loaded, saved = [], []
    load, save = AutoModelForCausalLM.from_pretrained, PreTrainedModel.save_pretrained

    def load_spy(*args, **kwargs):
        loaded.append(load(*args, **kwargs))
        return loaded[-1]

    def save_spy(self, *args, **kwargs):
        saved.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load_spy)
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_spy)
    assert export(capsys, run_dir, tmp_path / "out")[0] == 0
    assert len(loaded) == 1 and len(saved) == 1 and saved[0] is loaded[0]
    assert files(run_dir / "models/sft") == policy_files


def test_the_model_card_carries_yaml_metadata_with_the_base_licence_and_vector_sums(own_run, tmp_path, capsys):
    """The run's policy is an SFT model of a base loaded from the hub: the merged model descends from the hub model
    (its id in the card), the LoRA form applies to the local SFT model; the licence is the base's."""
    workdir, run_dir = own_run
    (run_dir / "models/base").mkdir()
    (run_dir / "models/base/metadata.json").write_text(json.dumps(
        {"stage": "base_model", "start_model_dir": "org/tiny", "settings": {},
         "origin": {"hub_id": "org/tiny", "revision": "c0ffee", "license": "apache-2.0"}}))
    (run_dir / "models/sft/metadata.json").write_text(json.dumps(
        {"stage": "sft", "start_model_dir": "results/r/models/base", "settings": {}}))
    assert export(capsys, run_dir, tmp_path / "merged")[0] == 0
    card = front_matter(tmp_path / "merged/README.md")
    vectors = run_dir / "seed_3/value_vectors"
    assert card == {
        "base_model": "org/tiny", "base_model_revision": "c0ffee", "license": "apache-2.0",
        "library_name": "transformers", "tags": ["mva", "multi-value-alignment", "merge"], "method": "mva",
        "seed": 3, "lambdas": {"helpful": 0.7, "harmless": 1.2},
        "value_vectors": {v: {"sha256": file_sha256(vectors / f / "adapter_model.safetensors"),
                              "path": str((vectors / f).resolve())}
                          for v, f in [("helpful", "independent/helpful"), ("harmless", "mva/harmless")]},
        "dtype": "float32"}
    assert export(capsys, run_dir, tmp_path / "lora", "--as-lora")[0] == 0
    card = front_matter(tmp_path / "lora/README.md")
    assert card["base_model"] == str((run_dir / "models/sft").resolve()) and "base_model_revision" not in card
    assert card["license"] == "apache-2.0"


def test_as_lora_on_a_hub_base_names_the_hub_id(own_run, tmp_path, capsys):
    """Vectors trained directly on a base loaded from the hub (SFT disabled): the λ adapter names the hub id and
    revision, as the vectors do."""
    _, run_dir = own_run
    (run_dir / "models/sft/metadata.json").write_text(json.dumps(
        {"stage": "base_model", "start_model_dir": "org/tiny", "settings": {},
         "origin": {"hub_id": "org/tiny", "revision": "c0ffee", "license": None}}))
    assert export(capsys, run_dir, tmp_path / "lora", "--as-lora")[0] == 0
    config = json.loads((tmp_path / "lora/adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("org/tiny", "c0ffee")
    card = front_matter(tmp_path / "lora/README.md")
    assert card["base_model"] == "org/tiny" and "license" not in card
    record = json.loads((tmp_path / "lora/mva_export.json").read_text())
    assert record["base_model"] == str((run_dir / "models/sft").resolve())  # the local copy stays on record


@pytest.mark.slow
def test_the_export_of_smollm2_peaks_below_1_3_times_the_model_size(tmp_path):
    """benchmarks/export_memory.py on the default base (fp32, and a bf16 copy), each export in a fresh process:
    resident memory above the post-import baseline ≤ 1.3 × the written weights (the deep copy took 2.1 ×)."""
    result = subprocess.run([sys.executable, str(REPO / "benchmarks/export_memory.py"), "--workdir", str(tmp_path),
                             "--arms", "float32", "bfloat16"], capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ratios = dict(line.split("=") for line in result.stdout.splitlines() if line.startswith("export_memory_ratio_"))
    assert set(ratios) == {"export_memory_ratio_float32", "export_memory_ratio_bfloat16"}
    assert all(0.9 < float(ratio) <= 1.3 for ratio in ratios.values()), ratios


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

    monkeypatch.setattr("mva_core.combine.merge_in_place", fail)
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
