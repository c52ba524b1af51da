"""ValueMixer, merge_explicit / merge_in_place and stacked_lora: exact W + Σ λ_v s_v B_v A_v for any real λ."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from mva_core.combine import (
    MultiValueLinear,
    ValueMixer,
    merge_explicit,
    merge_in_place,
    read_value_vector,
    stacked_lora,
)

LAMBDAS = [(0.0, 0.0), (1.0, 0.0), (0.3, 0.7), (-0.5, 1.5), (2.0, -1.0)]


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, tiny_llama, random_adapters):
    """The shared tiny model (not changed here: mixers attach to copies) and value vectors (conftest)."""
    input_ids = torch.randint(3, len(tiny_tokenizer), (3, 10), generator=torch.Generator().manual_seed(1))
    return tiny_llama, random_adapters, input_ids


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("lams", LAMBDAS)
def test_mixer_matches_explicit_merge(setup, lams):
    model, adapters, input_ids = setup
    mixer = ValueMixer.attach(copy.deepcopy(model), adapters)
    merged = merge_explicit(model, adapters, dict(zip(mixer.values, lams)))
    with mixer.lambdas(torch.tensor(lams)):
        mixed = logits(mixer.model, input_ids)
    torch.testing.assert_close(mixed, logits(merged, input_ids), atol=1e-5, rtol=1e-5)


def peft_delta(model, adapter) -> dict[str, torch.Tensor]:
    """ΔW of every weight that PEFT's own merge of ``adapter`` changes (computed without mva_core)."""
    merged = PeftModel.from_pretrained(copy.deepcopy(model), adapter).merge_and_unload()
    before = model.state_dict()
    return {name: weight - before[name] for name, weight in merged.state_dict().items()
            if not torch.equal(weight, before[name])}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_in_place_adds_the_weighted_peft_deltas_to_the_model_itself(setup, dtype):
    """Issue 25: the export merges into the one model it loaded (no copy), summing in fp32 and casting once."""
    model, adapters, _ = setup
    lams = {"care": -0.5, "safe": 1.5}
    deltas = {value: peft_delta(model, adapters[value]) for value in lams}
    target = copy.deepcopy(model).to(dtype)
    base = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    assert merge_in_place(target, adapters, lams) is target
    changed = set(deltas["care"]) | set(deltas["safe"])
    assert {"model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight"} <= changed
    for name, weight in target.state_dict().items():
        expected = base[name].float() + sum(lam * deltas[v].get(name, 0) for v, lam in lams.items())
        assert weight.dtype == dtype
        if dtype == torch.float32:
            torch.testing.assert_close(weight, expected, atol=1e-6, rtol=1e-6)
        else:  # one rounding of the fp32 sum: at most one bf16 step away
            torch.testing.assert_close(weight.float(), expected, atol=1e-6, rtol=2 ** -7)
        assert torch.equal(weight, base[name]) == (name not in changed), name


def test_stacked_lora_is_one_adapter_of_rank_sum_r_equal_to_the_weighted_sum(setup):
    """Issue 25 (``mva-export --as-lora``): A = [A_care; A_safe], B = [λ s B_care, λ s B_safe], zero blocks where
    a value lacks the module; B·A = Σ λ_v ΔW_v on every module either value targets."""
    model, adapters, _ = setup
    lams = {"care": 0.3, "safe": -1.25}
    deltas = {value: peft_delta(model, adapters[value]) for value in lams}
    stacked = stacked_lora(adapters, lams)
    modules = {name.removesuffix(".weight") for d in deltas.values() for name in d}
    assert set(stacked) == modules
    for module, (a, b) in stacked.items():
        assert a.shape[0] == b.shape[1] == 4 + 2
        expected = sum(lam * deltas[v].get(f"{module}.weight", 0) for v, lam in lams.items())
        torch.testing.assert_close(b @ a, expected, atol=1e-6, rtol=1e-6)
    a, b = stacked["model.layers.0.mlp.down_proj"]  # care only: safe's block is zero
    assert not a[4:].any() and not b[:, 4:].any() and a[:4].any()


def test_lambdas_change_the_model(setup):
    model, adapters, input_ids = setup
    merged = merge_explicit(model, adapters, {"care": 1.0, "safe": 1.0})
    assert (logits(merged, input_ids) - logits(model, input_ids)).abs().max() > 1e-2


@pytest.mark.parametrize("lams", [(0.3, 0.7), (-0.5, 1.5)])
def test_mixer_matches_peft_scaled_adapters(setup, lams):
    model, adapters, input_ids = setup
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), adapters["care"], adapter_name="care")
    peft_model.load_adapter(adapters["safe"], adapter_name="safe")
    peft_model.base_model.set_adapter(["care", "safe"])
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for value, lam in zip(["care", "safe"], lams):
                module.set_scale(value, lam)
    mixer = ValueMixer.attach(copy.deepcopy(model), adapters)
    mixer.set_lambdas(lams)
    torch.testing.assert_close(logits(mixer.model, input_ids), logits(peft_model, input_ids), atol=1e-5, rtol=1e-5)


def test_heterogeneous_batch_equals_separate_forwards(setup):
    model, adapters, input_ids = setup
    mixer = ValueMixer.attach(copy.deepcopy(model), adapters)
    rows = torch.tensor(LAMBDAS[2:])
    with mixer.lambdas(rows):
        together = logits(mixer.model, input_ids)
    for i, lams in enumerate(rows):
        with mixer.lambdas(lams):
            alone = logits(mixer.model, input_ids[i: i + 1])
        torch.testing.assert_close(together[i: i + 1], alone, atol=1e-5, rtol=1e-5)


def test_batch_mismatch_names_the_layer(setup):
    model, adapters, input_ids = setup
    mixer = ValueMixer.attach(copy.deepcopy(model), adapters)
    mixer.set_lambdas(torch.ones(2, 2))
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj"):
        logits(mixer.model, input_ids)


def test_lambdas_context_restores_previous(setup):
    model, adapters, input_ids = setup
    mixer = ValueMixer.attach(copy.deepcopy(model), adapters)
    base = logits(mixer.model, input_ids)
    with mixer.lambdas([1.0, 1.0]):
        pass
    assert torch.equal(logits(mixer.model, input_ids), base)


def test_detach_restores_original_modules(setup):
    model, adapters, input_ids = setup
    target = copy.deepcopy(model)
    before = logits(target, input_ids)
    mixer = ValueMixer.attach(target, adapters)
    assert isinstance(target.get_submodule("model.layers.0.self_attn.q_proj"), MultiValueLinear)
    mixer.set_lambdas([1.0, -1.0])
    restored = mixer.detach()
    assert restored is target
    assert not any(isinstance(m, MultiValueLinear) for m in target.modules())
    assert torch.equal(logits(target, input_ids), before)


def test_read_value_vector_keys_and_scaling(setup):
    _, adapters, _ = setup
    care, safe = read_value_vector(adapters["care"]), read_value_vector(adapters["safe"])
    a, b, scaling = care["model.layers.1.mlp.down_proj"]
    assert a.shape == (4, 128) and b.shape == (64, 4) and scaling == 2.0
    assert safe["model.layers.0.self_attn.k_proj"][2] == pytest.approx(4 / 2 ** 0.5)
    assert len(care) == 2 * 3 and len(safe) == 2 * 5


def test_read_value_vector_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_value_vector(tmp_path / "nowhere")


def test_read_value_vector_rejects_dora(setup, tmp_path):
    _, adapters, _ = setup
    folder = tmp_path / "dora"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes((adapters["care"] / "adapter_model.safetensors").read_bytes())
    config = json.loads((adapters["care"] / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match=r"dora.*use_dora"):
        read_value_vector(folder)
