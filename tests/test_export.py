"""mva-export: a plain transformers model for one λ of a run, equal to the pipeline's mixer at that λ."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig
from synthetic import save_random_adapter
from transformers import AutoModelForCausalLM

from mva_core.combine import ValueMixer
from mva_core.export import export_model, main

CONFIG = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama, tiny_model_dir):
    """results/r of a workdir: the policy model (the shared tiny one) and value vectors as the pipeline lays them
    out (mva: only the second value has its own vector)."""
    workdir = tmp_path_factory.mktemp("work")
    run_dir = workdir / "results/r"
    shutil.copytree(tiny_model_dir, run_dir / "models/sft")
    model = copy.deepcopy(tiny_llama)  # the mixer below attaches to it
    vectors = run_dir / "seed_3/value_vectors"
    for i, folder in enumerate(["independent/helpful", "independent/harmless", "mva/harmless"]):
        save_random_adapter(model, CONFIG, vectors / folder, seed=i)
        metadata = {"stage": "value_vector", "start_model_dir": "results/r/models/sft", "settings": {}}
        if i == 0:  # the format written before the training harness
            metadata = {"sft_model_dir": "results/r/models/sft"}
        (vectors / folder / "metadata.json").write_text(json.dumps(metadata))
    return workdir, run_dir, model


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
    with pytest.raises(ValueError, match=r"one λ per value of the run: \['harmless', 'helpful'\]"):
        export_model(run_dir, "soup", 3, {"helpful": 1.0}, tmp_path / "x")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        out = export_model(run_dir, "soup", 3, {"helpful": 1.0, "harmless": 0.0}, tmp_path / "soup")
    finally:
        os.chdir(previous)
    card = json.loads((out / "mva_export.json").read_text())
    assert card["value_vectors"]["harmless"]["path"].endswith("independent/harmless")
    with pytest.raises(SystemExit, match="must look like VALUE=NUMBER"):  # the CLI (run as a command above)
        main([str(run_dir), "--method", "mva", "--seed", "3", "--lambda", "helpful:1", "--out", str(tmp_path / "y")])
    assert not (tmp_path / "y").exists()
