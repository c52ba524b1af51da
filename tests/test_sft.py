"""SFT through the training harness: a merged plain model dir, the shared log and metadata format, resume."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from mva_core.sft import SFTSettings, run_sft
from mva_core.training.harness import TrainingJob

SETTINGS = SFTSettings(learning_rate=1e-2, batch_size=2, max_length=64, lora_r=2, lora_alpha=4,
                       target_modules=("q_proj", "v_proj"), save_steps=2)
PAIRS = pd.DataFrame({
    "pair_id": [f"p{i}" for i in range(8)],
    "prompt": [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(8)],
    "chosen": [f"It is {2 * i}." for i in range(8)],
    "rejected": ["No."] * 8,
})


def test_sft_writes_a_merged_model_with_the_shared_log_and_metadata(tmp_path, tiny_model_dir, tiny_llama):
    out = run_sft(tiny_model_dir, PAIRS, tmp_path / "sft", SETTINGS, checkpoint_dir=tmp_path / "ckpt", threads=1)
    assert not (tmp_path / "ckpt").exists() and not list(out.glob("adapter_*"))
    model = AutoModelForCausalLM.from_pretrained(out)
    changed = [name for name, w in model.state_dict().items() if not torch.equal(w, tiny_llama.state_dict()[name])]
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)  # the LoRA merged in
    log = pd.read_parquet(out / "training_log.parquet")
    assert list(log.columns[:4]) == ["step", "epoch", "loss", "learning_rate"] and log["step"].tolist() == [1, 2, 3, 4]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["stage"] == "sft" and meta["start_model_dir"] == str(tiny_model_dir) and meta["n_pairs"] == 8
    assert meta["settings"]["sft"]["lora_r"] == 2 and meta["global_steps"] == 4 and meta["resumed_from"] is None
    assert meta["seed"] == SETTINGS.seed and "trl" in meta["library_versions"] and meta["wall_time_s"] > 0


def test_killed_sft_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    real_save = TrainingJob.save

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the model was written")

    monkeypatch.setattr(TrainingJob, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run_sft(tiny_model_dir, PAIRS, tmp_path / "sft", SETTINGS, checkpoint_dir=tmp_path / "ckpt", threads=1)
    assert (tmp_path / "ckpt" / "checkpoint-4").is_dir() and not (tmp_path / "sft").exists()
    monkeypatch.setattr(TrainingJob, "save", real_save)
    out = run_sft(tiny_model_dir, PAIRS, tmp_path / "sft", SETTINGS, checkpoint_dir=tmp_path / "ckpt", threads=1)
    assert json.loads((out / "metadata.json").read_text())["resumed_from"] == "checkpoint-4"
