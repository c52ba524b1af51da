"""Exactly one BOS token, first, where the tokenizer expects one (Llama-2's ``<s>``): in the DPO and SFT batches TRL
tokenises and in the generation inputs, with the HH transcript template of the paper configs; a tokenizer that puts
no BOS in front of text (SmolLM2) keeps its token ids."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pandas as pd
import pytest

from mva_core.base_model import BaseModelSettings, ensure_chat_ready
from mva_core.bos import check_leading_bos, expected_bos
from mva_core.dpo_trainer import PreferenceCollator
from mva_core.generation import GenerationSettings, encode_prompt, generate_grid
from mva_core.tiny import build_tiny_llama, build_tiny_tokenizer

HH = BaseModelSettings(prompt_format="hh_transcript")
LONG = "Please explain how photosynthesis works in simple words, and then how a flat tire is fixed. " * 3
PAIRS = pd.DataFrame({
    "pair_id": ["short", "long"],
    "prompt": [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "Go on."}]],
    "chosen": ["Paris.", "Plants use light."],
    "rejected": ["No.", "I will not."],
})


@pytest.fixture(scope="module")
def llama_like():
    """A tiny Llama whose tokenizer puts ``<s>`` in front of text, prepared with the HH transcript template."""
    tokenizer = build_tiny_tokenizer(add_bos_token=True)
    model = build_tiny_llama(tokenizer).eval()
    ensure_chat_ready(model, tokenizer, HH)
    return model, tokenizer


@pytest.fixture(scope="module")
def llama_like_dir(tmp_path_factory, llama_like):
    model, tokenizer = llama_like
    folder = tmp_path_factory.mktemp("llama_like")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def bos_counts(batch: dict, bos: int) -> list[tuple[int, bool]]:
    """(BOS tokens among the attended ones, whether the first attended token is BOS) of every row of a batch."""
    rows = []
    for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        attended = [token for token, keep in zip(ids, mask) if keep]
        rows.append((attended.count(bos), attended[:1] == [bos]))
    return rows


def test_the_hh_template_starts_with_one_bos_for_a_bos_tokenizer(llama_like):
    _, tokenizer = llama_like
    bos = tokenizer.convert_tokens_to_ids("<s>")
    assert expected_bos(tokenizer) == bos and tokenizer("Hi")["input_ids"][0] == bos
    for messages in PAIRS["prompt"]:
        ids = encode_prompt(tokenizer, messages)
        assert ids[0] == bos and ids.count(bos) == 1
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        assert text.startswith("<s>\n\nHuman: ")
    conversation = [*PAIRS["prompt"][0], {"role": "assistant", "content": "Paris."}]
    assert tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"].count(bos) == 1
    again_model, again = copy.deepcopy(llama_like)
    ensure_chat_ready(again_model, again, BaseModelSettings())  # its own template, which already writes the BOS
    assert again.chat_template == tokenizer.chat_template and again.chat_template.count("bos_token") == 1


def test_generation_inputs_hold_one_bos_per_row(llama_like, monkeypatch):
    model, tokenizer = llama_like
    model = copy.deepcopy(model)
    bos, seen = expected_bos(tokenizer), []
    real_generate = model.generate

    def recording_generate(*, input_ids, attention_mask, **kwargs):
        seen.extend(bos_counts({"input_ids": input_ids, "attention_mask": attention_mask}, bos))
        return real_generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    prompts = PAIRS[["pair_id", "prompt"]].rename(columns={"pair_id": "prompt_id"})
    result = generate_grid(model, tokenizer, None, prompts, pd.DataFrame({"point_id": ["sft"]}),
                           GenerationSettings(max_new_tokens=4, batch_size=2), progress=False)
    assert len(result) == 2 and seen == [(1, True), (1, True)]


def test_dpo_batches_hold_one_bos_per_sequence_also_after_prompt_truncation(llama_like_dir, tmp_path, monkeypatch):
    from mva_core.penalties import PenaltySettings
    from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

    batches = []
    real_call = PreferenceCollator.torch_call

    def recording_call(self, examples):
        batch = real_call(self, examples)
        batches.append(batch)
        return batch

    monkeypatch.setattr(PreferenceCollator, "torch_call", recording_call)
    train_value_vector(llama_like_dir, PAIRS, tmp_path / "vector", frozen_vectors={}, lora=LoraSettings(r=2, alpha=4),
                       dpo=DPOSettings(batch_size=2, epochs=1, max_length=96, max_prompt_length=24),
                       penalty=PenaltySettings(), checkpoint_dir=tmp_path / "ckpt", threads=1)
    bos = build_tiny_tokenizer(add_bos_token=True).convert_tokens_to_ids("<s>")
    rows = [row for batch in batches for row in bos_counts(batch, bos)]
    assert len(rows) >= 4 and set(rows) == {(1, True)}  # reference precompute and training: chosen and rejected
    prompt_lengths = [int(((mask == 1) & (completion == 0)).sum()) for batch in batches
                      for mask, completion in zip(batch["attention_mask"], batch["completion_mask"])]
    assert max(prompt_lengths) == 24  # the long prompt was cut to its end, BOS first


def test_sft_batches_hold_one_bos_per_sequence(llama_like_dir, tmp_path, monkeypatch):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from mva_core.sft import SFTSettings, run_sft

    batches = []
    real_call = DataCollatorForLanguageModeling.torch_call

    def recording_call(self, examples):
        batch = real_call(self, examples)
        batches.append(batch)
        return batch

    monkeypatch.setattr(DataCollatorForLanguageModeling, "torch_call", recording_call)
    run_sft(llama_like_dir, PAIRS, tmp_path / "sft", SFTSettings(batch_size=2, max_length=256, lora_r=2, lora_alpha=4),
            checkpoint_dir=tmp_path / "ckpt", threads=1)
    bos = build_tiny_tokenizer(add_bos_token=True).convert_tokens_to_ids("<s>")
    rows = [row for batch in batches for row in bos_counts(batch, bos)]
    assert len(rows) == 2 and set(rows) == {(1, True)}


def test_prompt_truncation_keeps_the_bos_first():
    collator = PreferenceCollator(pad_token_id=0, max_prompt_length=3, bos_token_id=9)
    assert collator.truncate_prompt([9, 1, 2, 3, 4]) == [9, 3, 4]
    assert collator.truncate_prompt([9, 1, 2]) == [9, 1, 2]
    assert collator.truncate_prompt([5, 1, 2, 3, 4]) == [2, 3, 4]  # no BOS: the end, as before
    assert PreferenceCollator(pad_token_id=0, max_prompt_length=3).truncate_prompt([9, 1, 2, 3]) == [1, 2, 3]


def test_a_policy_saved_without_a_bos_in_its_template_is_refused(llama_like):
    _, tokenizer = llama_like
    stale = copy.deepcopy(tokenizer)
    stale.chat_template = stale.chat_template.replace("{{ bos_token }}", "")
    with pytest.raises(ValueError, match="expects one BOS token"):
        encode_prompt(stale, PAIRS["prompt"][0])
    with pytest.raises(ValueError, match="two BOS tokens"):
        check_leading_bos([7, 7, 1], 7, "generation prompt")


@pytest.mark.parametrize("prompt_format", ["chat_template", "hh_transcript"])
def test_a_tokenizer_without_a_bos_keeps_its_template_and_ids(tiny_tokenizer, tiny_llama, prompt_format):
    """The tiny tokenizer is configured like SmolLM2's: BOS ``<|im_start|>``, put in front of nothing."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    assert expected_bos(tokenizer) is None and tokenizer.bos_token == "<|im_start|>"
    ensure_chat_ready(copy.deepcopy(tiny_llama), tokenizer, BaseModelSettings(prompt_format=prompt_format))
    assert "bos_token" not in tokenizer.chat_template
    messages = PAIRS["prompt"][1]
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    assert encode_prompt(tokenizer, messages) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_smollm2s_own_template_and_ids_are_unchanged():
    """The default base's real tokenizer (from the GGUF file, ~7 s to load)."""
    from transformers import AutoTokenizer

    from mva_core.base_model import _gguf_location

    folder, name = _gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    template, messages = tokenizer.chat_template, PAIRS["prompt"][1]
    before = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True)["input_ids"]
    stand_in = SimpleNamespace(config=SimpleNamespace(), generation_config=SimpleNamespace())
    ensure_chat_ready(stand_in, tokenizer, BaseModelSettings())
    assert expected_bos(tokenizer) is None and tokenizer.chat_template == template
    assert encode_prompt(tokenizer, messages) == before
    assert before[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # the template's own first token
