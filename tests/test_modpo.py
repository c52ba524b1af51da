"""MODPO baseline: the margin is the other value's implicit DPO reward, and a zero-weight margin is plain DPO."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from synthetic import save_random_adapter

from mva_core.combine import merge_explicit
from mva_core.modpo import implicit_reward_margins, sequence_logps
from mva_core.penalties import PenaltySettings
from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

LORA = LoraSettings(r=4, alpha=8)
DPO = DPOSettings(batch_size=4, learning_rate=1e-2, save_steps=100, epochs=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer, tiny_llama, tiny_model_dir):
    """The shared tiny model as SFT model, a random 'helpful' vector, 8 preference pairs."""
    root = tmp_path_factory.mktemp("modpo")
    tokenizer, sft = tiny_tokenizer, tiny_llama
    config = LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, target_modules=list(LORA.target_modules))
    save_random_adapter(sft, config, root / "helpful", seed=3)
    pairs = pd.DataFrame({
        "pair_id": [f"p{i}" for i in range(8)],
        "prompt": [[{"role": "user", "content": f"Tell me about {i}"}] for i in range(8)],
        "chosen": [f"Gladly, {i} is a number." for i in range(8)],
        "rejected": ["No."] * 8,
    })
    return root, tokenizer, sft, pairs, tiny_model_dir


def _batch(tokenizer, n=3):
    """A [chosen; rejected] batch with completion masks, as TRL's collator lays it out."""
    rows = []
    for text in [f"prompt {i} answer yes" for i in range(n)] + [f"prompt {i} answer no" for i in range(n)]:
        rows.append(tokenizer(text)["input_ids"])
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        completion[i, 2 : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": completion}


def test_margin_is_the_other_values_implicit_reward(setup):
    root, tokenizer, sft, _, _ = setup
    model = PeftModel.from_pretrained(copy.deepcopy(sft), root / "helpful", adapter_name="helpful")
    model.add_adapter("default", LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    model.set_adapter("default")
    batch, beta, weight = _batch(tokenizer), 0.1, 0.7
    margins = implicit_reward_margins(model.eval(), [batch], {"helpful": weight}, beta)
    merged = merge_explicit(sft, {"helpful": root / "helpful"}, {"helpful": 1.0}).eval()
    with torch.no_grad():
        policy, ref = sequence_logps(merged, batch), sequence_logps(sft.eval(), batch)
    chosen, rejected = (policy - ref).chunk(2)
    expected = weight * beta * (chosen - rejected)
    torch.testing.assert_close(margins, expected, atol=1e-4, rtol=1e-4)
    assert expected.abs().max() > 1e-3  # the adapter really changes the reward
    assert model.active_adapter == "default"


def _train(setup, name, margin_weights, target_weight=1.0):
    root, _, _, pairs, sft_dir = setup
    return train_value_vector(
        sft_dir, pairs, root / name, frozen_vectors={"helpful": root / "helpful"}, lora=LORA, dpo=DPO,
        penalty=PenaltySettings(), checkpoint_dir=root / f"{name}.ckpt", threads=1,
        margin_weights=margin_weights, target_weight=target_weight,
    )


def test_zero_margin_modpo_equals_dpo_and_a_real_margin_changes_the_vector(setup):
    plain = load_file(_train(setup, "dpo", None) / "adapter_model.safetensors")
    zero = load_file(_train(setup, "modpo0", {"helpful": 0.0}) / "adapter_model.safetensors")
    weighted = _train(setup, "modpo5", {"helpful": 0.5}, target_weight=0.5)
    for key in plain:
        torch.testing.assert_close(zero[key], plain[key], atol=1e-5, rtol=1e-4)
    changed = load_file(weighted / "adapter_model.safetensors")
    assert any((changed[k] - plain[k]).abs().max() > 1e-4 for k in plain)
    metadata = json.loads((weighted / "metadata.json").read_text())
    assert metadata["margin_weights"] == {"helpful": 0.5} and metadata["target_weight"] == 0.5
