"""DPO value-vector training with a decorrelation penalty (tiny model, CPU)."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from trl import DPOConfig

from mva_core import value_training
from mva_core.decorrelation import decorrelation_table
from mva_core.dpo_trainer import DecorrelatedDPOTrainer, PreferenceCollator, preference_dataset
from mva_core.penalties import DecorrelationPenalty, PenaltySettings
from mva_core.training.checkpoints import resume_point
from mva_core.training.guards import NonFiniteLossError
from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

LORA = LoraSettings(r=4, alpha=8)
DPO = DPOSettings(batch_size=4, learning_rate=1e-2, save_steps=2)
HSIC = PenaltySettings(kind="hsic", weight=20.0, form="lora_a", sigma=1.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama, tiny_model_dir):
    """Outputs folder, SFT model dir (the shared tiny model), a frozen 'helpful' adapter with nonzero B, and 16
    synthetic preference pairs."""
    root = tmp_path_factory.mktemp("value_training")
    torch.manual_seed(7)
    frozen = get_peft_model(
        copy.deepcopy(tiny_llama),
        LoraConfig(r=LORA.r, lora_alpha=LORA.alpha, target_modules=list(LORA.target_modules)),
    )
    with torch.no_grad():
        for name, param in frozen.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    frozen.save_pretrained(root / "helpful")
    pairs = pd.DataFrame(
        {
            "pair_id": [f"p{i:02d}" for i in range(16)],
            "prompt": [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(16)],
            "chosen": [f"It is {2 * i}." for i in range(16)],
            "rejected": ["I will not tell you."] * 16,
        }
    )
    return root, pairs, tiny_model_dir


def train(setup, name, penalty=HSIC, init_seed=None):
    root, pairs, sft = setup
    return train_value_vector(
        sft,
        pairs,
        root / name,
        frozen_vectors={"helpful": root / "helpful"},
        lora=LORA,
        dpo=DPO,
        penalty=penalty,
        checkpoint_dir=root / f"{name}.ckpt",
        threads=1,
        init_seed=init_seed,
    )


def total_hsic(setup, adapter_dir) -> float:
    root, _, _ = setup
    table = decorrelation_table({"trained": adapter_dir, "helpful": root / "helpful"})
    return float(table["hsic_lora_a_sigma1"].sum())


@pytest.fixture(scope="module")
def penalised(setup):
    """An uninterrupted penalised run (4 steps, checkpoints at steps 2 and 4)."""
    return train(setup, "penalised")


def test_penalty_lowers_hsic_and_output_is_a_default_only_adapter(setup, penalised):
    root, pairs, sft_dir = setup
    plain = train(setup, "plain", penalty=PenaltySettings(kind="hsic", weight=0.0))
    assert total_hsic(setup, penalised) < 0.7 * total_hsic(setup, plain)  # deterministic: ~0.061 vs ~0.125

    assert sorted(p.name for p in penalised.iterdir() if p.is_dir()) == []  # no "ref" or "helpful" subfolders
    assert not (root / "penalised.ckpt").exists()
    keys = load_file(penalised / "adapter_model.safetensors")
    assert len(keys) == 2 * 2 * 4 and all(".default." not in k and ".ref." not in k for k in keys)
    sft = AutoModelForCausalLM.from_pretrained(sft_dir)
    loaded = PeftModel.from_pretrained(sft, penalised)
    assert list(loaded.peft_config) == ["default"]
    assert json.loads((penalised / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        sft_dir.resolve())

    log = pd.read_parquet(penalised / "training_log.parquet")
    assert log["step"].tolist() == [1, 2, 3, 4]
    for column in ("loss", "dpo_loss", "penalty", "rewards/accuracies", "rewards/margins", "learning_rate"):
        assert log[column].notna().all(), column
    assert (log["penalty"] > 0).all() and log["penalty"].is_monotonic_decreasing
    assert log["loss"].to_numpy() == pytest.approx(
        (log["dpo_loss"] + HSIC.weight * log["penalty"]).to_numpy(), rel=1e-4
    )
    assert (pd.read_parquet(plain / "training_log.parquet")["penalty"] == 0).all()

    meta = json.loads((penalised / "metadata.json").read_text())
    assert meta["n_pairs"] == len(pairs) and meta["settings"]["penalty"]["weight"] == HSIC.weight and meta["seed"] == DPO.seed
    assert meta["global_steps"] == 4 and meta["resumed_from"] is None and "trl" in meta["library_versions"]
    assert meta["stage"] == "value_vector" and meta["start_model_dir"] == str(sft_dir)
    norms = meta["delta_w_norms"]
    total = norms.pop("total")
    assert len(norms) == 2 * 4 and total == pytest.approx(sum(n * n for n in norms.values()) ** 0.5)
    table = decorrelation_table({"trained": penalised, "helpful": root / "helpful"})
    assert table["norm_a"].to_numpy() == pytest.approx([norms[m] for m in table["module"]], rel=1e-4)
    assert log["delta_w_norm"].iloc[0] == 0 and log["delta_w_norm"].iloc[1:].is_monotonic_increasing  # B starts at 0


def test_cka_penalty_trains_and_lowers_linear_cka(setup):
    cka = PenaltySettings(kind="cka", weight=5.0)
    trained = train(setup, "cka", penalty=cka, init_seed=7)
    plain = train(setup, "cka_plain", penalty=PenaltySettings(kind="cka", weight=0.0), init_seed=7)
    log = pd.read_parquet(trained / "training_log.parquet")
    assert log["penalty"].iloc[0] == 0  # B starts at 0, so ΔW = 0 and CKA is 0 before the first step
    assert (log["penalty"].iloc[1:] > 0).all() and log["penalty"].iloc[-1] < log["penalty"].iloc[1]
    assert log["loss"].to_numpy() == pytest.approx((log["dpo_loss"] + cka.weight * log["penalty"]).to_numpy(), rel=1e-4)
    root, _, _ = setup

    def mean_cka(adapter):
        return decorrelation_table({"trained": adapter, "helpful": root / "helpful"}, draws=2)["cka_linear_delta_w"].mean()

    assert mean_cka(trained) < mean_cka(plain)


def test_trainer_freezes_everything_but_default_and_keeps_pair_ids(setup, tiny_tokenizer):
    root, pairs, sft_dir = setup
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(sft_dir), LoraConfig(r=4, target_modules=["q_proj"])
    )
    model.load_adapter(str(root / "helpful"), adapter_name="helpful", is_trainable=False)
    model.set_adapter("default")
    seen = []

    class Recording(DecorrelatedDPOTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            seen.extend(inputs["pair_id"])
            return super().compute_loss(model, inputs, *args, **kwargs)

    trainer = Recording(
        model,
        args=DPOConfig(
            output_dir=str(root / "direct"),
            max_steps=1,
            per_device_train_batch_size=4,
            use_cpu=True,
            bf16=False,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            activation_checkpointing=False,
        ),
        train_dataset=preference_dataset(pairs),
        processing_class=tiny_tokenizer,
        data_collator=PreferenceCollator(pad_token_id=0, max_length=64, max_prompt_length=16),
        penalty=HSIC,
        frozen_adapters=["helpful"],
    )
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and all(".default." in name for name in trainable)
    penalty_pairs = trainer._decorrelation.pairs
    assert {p.frozen_adapter for p in penalty_pairs} == {"helpful"} and len(penalty_pairs) == 2  # q_proj × 2 layers
    trainer.train()
    assert len(seen) == 4 and set(seen) <= set(pairs["pair_id"])

    with pytest.raises(ValueError, match="'harmless'"):
        DecorrelatedDPOTrainer(model, penalty=HSIC, frozen_adapters=["harmless"], train_dataset=None)


def test_collator_keeps_prompt_end_and_pair_ids():
    collator = PreferenceCollator(pad_token_id=0, max_length=5, max_prompt_length=2)
    batch = collator([{"pair_id": "a", "prompt_ids": [1, 2, 3, 4], "chosen_ids": [5, 6, 7, 8], "rejected_ids": [9]}])
    assert batch["input_ids"].tolist() == [[3, 4, 5, 6, 7], [3, 4, 9, 0, 0]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]]
    assert batch["pair_id"] == ["a"]


def test_checkpoints_of_another_run_are_discarded(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert resume_point(ckpt, {"run": 1}) is None
    _complete_checkpoint(ckpt / "checkpoint-2", step=2)
    assert resume_point(ckpt, {"run": 1}) == str(ckpt / "checkpoint-2")
    assert resume_point(ckpt, {"run": 2}) is None and not (ckpt / "checkpoint-2").exists()


def _complete_checkpoint(folder, step):
    from transformers.trainer_callback import TrainerState

    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    TrainerState(global_step=step).save_to_json(str(folder / "trainer_state.json"))


def test_a_checkpoint_killed_while_saving_is_removed_and_the_last_complete_one_used(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert resume_point(ckpt, {"run": 1}) is None
    _complete_checkpoint(ckpt / "checkpoint-2", step=2)
    (ckpt / "checkpoint-4").mkdir()  # killed after the weights, before trainer_state.json
    (ckpt / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"weights")
    _complete_checkpoint(ckpt / "checkpoint-10", step=10)
    (ckpt / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 1')  # killed mid-write
    assert resume_point(ckpt, {"run": 1}) == str(ckpt / "checkpoint-2")
    assert not (ckpt / "checkpoint-4").exists() and not (ckpt / "checkpoint-10").exists()
    assert "removing incomplete checkpoint" in capsys.readouterr().out
    assert resume_point(ckpt, {"run": 1}) == str(ckpt / "checkpoint-2")  # a rerun resumes, no manual clean-up


def test_non_finite_penalty_raises_with_step_and_pair_ids(setup, monkeypatch):
    monkeypatch.setattr(DecorrelationPenalty, "__call__", lambda self: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"penalty is nan at global step 1 \(pair ids: \['p\d\d'"):
        train(setup, "nan")


def test_killed_run_resumes_from_checkpoint_and_matches_uninterrupted(setup, penalised, monkeypatch):
    root, _, _ = setup
    original_save = DecorrelatedDPOTrainer._save_checkpoint

    def save_then_die(self, model, trial):
        original_save(self, model, trial)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(DecorrelatedDPOTrainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(setup, "resumed")
    assert (root / "resumed.ckpt" / "checkpoint-2").is_dir() and not (root / "resumed").exists()
    monkeypatch.setattr(DecorrelatedDPOTrainer, "_save_checkpoint", original_save)
    resumed = train(setup, "resumed")

    assert json.loads((resumed / "metadata.json").read_text())["resumed_from"] == "checkpoint-2"
    expected, got = load_file(penalised / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    log = pd.read_parquet(resumed / "training_log.parquet")
    assert log["step"].tolist() == [1, 2, 3, 4]
    reference_log = pd.read_parquet(penalised / "training_log.parquet")
    assert log["penalty"].to_numpy() == pytest.approx(reference_log["penalty"].to_numpy(), rel=1e-4)


def test_values_get_distinct_initialisations_and_record_them(setup):
    """Two values of one run (init seeds derived from (seed, value)) must not share their starting LoRA A."""
    seeds = {v: value_training.derive_seed(DPO.seed, "value", v) for v in ("first", "second")}
    assert len(set(seeds.values())) == 2 and seeds["first"] == value_training.derive_seed(DPO.seed, "value", "first")
    none = PenaltySettings(kind="none")
    dirs = {v: train(setup, f"init_{v}", penalty=none, init_seed=s) for v, s in seeds.items()}
    weights = {v: load_file(d / "adapter_model.safetensors") for v, d in dirs.items()}
    a_keys = [k for k in weights["first"] if "lora_A" in k]
    first = torch.cat([weights["first"][k].flatten() for k in a_keys])
    second = torch.cat([weights["second"][k].flatten() for k in a_keys])
    assert (first - second).norm() > 0.5 * first.norm()
    for v, d in dirs.items():
        assert json.loads((d / "metadata.json").read_text())["init_seed"] == seeds[v]
