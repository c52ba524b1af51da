"""The compute-dtype policy: auto-detection, its fp32 fallback, and a bf16 training run with fp32 LoRA weights."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mva_core import precision
from mva_core.precision import job_precision, resolve_precision, with_job_dtype


@pytest.mark.parametrize("fast,expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_follows_the_cpu_capability(monkeypatch, fast, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    chosen = resolve_precision("auto")
    assert (chosen.device, chosen.dtype) == ("cpu", expected)
    assert ("has" if fast else "lacks") in chosen.reason
    assert chosen.trainer_kwargs() == {"use_cpu": True, "bf16": fast, "fp16": False}


def test_explicit_choices_overrides_and_bad_values(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("bfloat16").torch_dtype == torch.bfloat16
    assert job_precision({"compute": {"dtype": "float32"}}).dtype == "float32"
    half = job_precision({"compute": {"dtype": "bfloat16"}}, override="float16")
    assert half.dtype == "float16" and half.trainer_kwargs() == {"use_cpu": True, "bf16": False, "fp16": True}
    assert with_job_dtype({"dtype": None, "batch_size": 4}, {"compute": {"dtype": "bfloat16"}}) == {
        "dtype": "bfloat16", "batch_size": 4}
    with pytest.raises(ValueError, match="compute.dtype"):
        resolve_precision("float64")


def test_penalty_block_runs_in_fp32_inside_autocast():
    chosen = resolve_precision("bfloat16")
    a = torch.randn(8, 8)
    with torch.autocast(device_type=chosen.device, dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with chosen.full_precision():
            assert (a @ a).dtype == torch.float32


def test_bf16_value_vector_keeps_fp32_lora_weights(tmp_path, tiny_model_dir):
    import pandas as pd

    from mva_core.penalties import PenaltySettings
    from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

    pairs = pd.DataFrame({"pair_id": [f"p{i}" for i in range(4)],
                          "prompt": [[{"role": "user", "content": f"Add {i} and {i}."}] for i in range(4)],
                          "chosen": [f"{2 * i}" for i in range(4)], "rejected": ["no"] * 4})
    out = train_value_vector(tiny_model_dir, pairs, tmp_path / "vector", frozen_vectors={},
                             lora=LoraSettings(r=2, alpha=4), dpo=DPOSettings(batch_size=4, max_length=32),
                             penalty=PenaltySettings(), checkpoint_dir=tmp_path / "ckpt", threads=1,
                             precision=resolve_precision("bfloat16"))
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float32 and t.isfinite().all() for t in weights.values())
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["precision"]["dtype"] == "bfloat16"
    assert pd.read_parquet(out / "training_log.parquet")["dpo_loss"].notna().all()


def test_attention_kernel_reaches_the_loaded_policy(monkeypatch, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "attn_implementation" not in job_precision({"compute": {"dtype": "float32"}}).model_kwargs()
    eager = job_precision({"compute": {"dtype": "float32", "attn_implementation": "eager"}})
    assert eager.describe()["attn_implementation"] == "eager"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **eager.model_kwargs())
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="compute.attn_implementation"):
        job_precision({"compute": {"attn_implementation": "flash"}})
