"""Prompt formats (base_model.prompt_format): one chat template used by SFT, DPO and generation; the HH transcript
of the paper ends an assistant turn with EOS, and generation cuts a reply at the next '\\n\\nHuman:' turn."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from mva_core.base_model import HH_STOP, BaseModelSettings, ensure_chat_ready, stop_strings
from mva_core.generation import GenerationSettings, cut_at_stop, generate_grid

CONVERSATION = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "How are you?"}]


@pytest.fixture
def tiny(tiny_llama, tiny_tokenizer):
    """Copies of the shared tiny model and tokenizer: ensure_chat_ready changes both."""
    return copy.deepcopy(tiny_llama), copy.deepcopy(tiny_tokenizer)


def test_hh_transcript_renders_the_papers_format(tiny):
    model, tokenizer = tiny
    ensure_chat_ready(model, tokenizer, BaseModelSettings(prompt_format="hh_transcript"))
    prompt = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert prompt == f"\n\nHuman: Hi?\n\nAssistant: Hello.{tokenizer.eos_token}\n\nHuman: How are you?\n\nAssistant:"
    full = tokenizer.apply_chat_template([*CONVERSATION, {"role": "assistant", "content": "Fine."}], tokenize=False)
    assert full.endswith("\n\nAssistant: Fine." + tokenizer.eos_token)  # DPO/SFT targets end with EOS
    assert stop_strings("hh_transcript") == [HH_STOP] and stop_strings("chat_template") == []


def test_custom_template_needs_its_text_and_chat_template_keeps_the_models(tiny):
    model, tokenizer = tiny
    own = tokenizer.chat_template
    ensure_chat_ready(model, tokenizer, BaseModelSettings())
    assert tokenizer.chat_template == own
    with pytest.raises(ValueError, match="chat_template is required"):
        ensure_chat_ready(model, tokenizer, BaseModelSettings(prompt_format="custom"))
    ensure_chat_ready(model, tokenizer, BaseModelSettings(prompt_format="custom", chat_template="{{ messages[0]['content'] }}"))
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == "Hi?"


def test_cut_at_stop_takes_the_first_stop():
    assert cut_at_stop("Sure.\n\nHuman: and?\n\nHuman: x", [HH_STOP]) == ("Sure.", True)
    assert cut_at_stop("Sure.", [HH_STOP]) == ("Sure.", False)


def test_a_model_that_writes_the_next_human_turn_is_cut_there(tiny, monkeypatch):
    model, tokenizer = tiny
    ensure_chat_ready(model, tokenizer, BaseModelSettings(prompt_format="hh_transcript"))
    invented = tokenizer("here is the answer\n\nHuman: and now I ask", add_special_tokens=False)["input_ids"]
    seen = {}

    def generate(input_ids, attention_mask, **kwargs):  # the stand-in model invents the user's next turn
        seen.update(kwargs)
        return torch.cat([input_ids, torch.tensor([invented] * len(input_ids))], dim=1)

    monkeypatch.setattr(model, "generate", generate)
    prompts = pd.DataFrame({"prompt_id": ["p"], "prompt": [[{"role": "user", "content": "question"}]]})
    settings = GenerationSettings(max_new_tokens=len(invented), stop_strings=stop_strings("hh_transcript"))
    out = generate_grid(model, tokenizer, None, prompts, pd.DataFrame({"point_id": ["sft"]}), settings, progress=False)
    assert out["response"].tolist() == ["here is the answer"] and out["finished"].tolist() == [True]
    assert out["n_response_tokens"].iloc[0] < len(invented)
    assert seen["stop_strings"] == [HH_STOP] and seen["tokenizer"] is tokenizer  # generation also stops early
