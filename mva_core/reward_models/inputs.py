"""Reward-model inputs: (prompt messages, response) rendered in an input format and encoded to token ids, the same
way for training and scoring; the tokenizer both use; prompt cells and preference pairs of the pipeline's tables."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mva_core.contracts import TRAINING_PAIRS, validate_table
from mva_core.reward_models.settings import INPUT_FORMATS

HH_ROLES = {"user": "Human", "assistant": "Assistant"}

Messages = list[dict[str, str]]
RMInputs = list[str] | list[tuple[str, str]]


def hh_transcript(messages: Sequence[Mapping[str, str]]) -> str:
    """Anthropic HH text of a dialogue: "\\n\\nHuman: ...\\n\\nAssistant: ..." (user/assistant roles only)."""
    parts = []
    for i, message in enumerate(messages):
        role = message["role"]
        if role not in HH_ROLES:
            raise ValueError(f"message {i} has role {role!r}: the HH transcript format knows only {tuple(HH_ROLES)}")
        parts.append(f"\n\n{HH_ROLES[role]}: {message['content']}")
    return "".join(parts)


def format_rm_inputs(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[str], input_format: str
) -> RMInputs:
    """Reward-model inputs for (prompt, response) pairs; each prompt appears exactly once, the response last."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if input_format == "chat_template":
        if tokenizer.chat_template is None:
            name = tokenizer.name_or_path
            raise ValueError(f"input_format='chat_template' but tokenizer {name!r} has no chat template")
        return [
            tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
            for prompt, response in zip(prompts, responses)
        ]
    if input_format == "hh_transcript":
        return [hh_transcript([*prompt, {"role": "assistant", "content": r}]) for prompt, r in zip(prompts, responses)]
    if input_format == "text_pair":
        return [(hh_transcript(prompt) + "\n\nAssistant:", response) for prompt, response in zip(prompts, responses)]
    raise ValueError(f"input_format={input_format!r}: expected one of {INPUT_FORMATS}")


def encode_rm_inputs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    responses: list[str],
    input_format: str,
    max_length: int,
) -> list[list[int]]:
    """Token ids of the formatted inputs, cut to ``max_length`` on the tokenizer's truncation side."""
    inputs = format_rm_inputs(tokenizer, prompts, responses, input_format)
    if not inputs:
        return []
    kwargs: dict[str, Any] = {"truncation": True, "max_length": max_length}
    if input_format == "text_pair":
        questions, answers = zip(*inputs)
        return tokenizer(list(questions), list(answers), **kwargs)["input_ids"]
    # A rendered chat template already holds its special tokens.
    return tokenizer(inputs, add_special_tokens=input_format != "chat_template", **kwargs)["input_ids"]


def prompt_messages(value: Any, where: str) -> Messages:
    """A prompt cell (list or Arrow-decoded array of {role, content}) as a list of plain dicts."""
    try:
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    except (TypeError, KeyError) as err:
        raise ValueError(f"{where}: prompt must be a list of {{role, content}} messages, got {value!r}") from err


def pair_lists(pairs: pd.DataFrame) -> tuple[list[Messages], list[str], list[str]]:
    """Validated (prompts, chosen, rejected) lists of a preference-pair frame."""
    validate_table(pairs, TRAINING_PAIRS)
    if pairs.empty:
        raise ValueError("pairs is empty")
    prompts = [prompt_messages(p, f"pair_id={pid!r}") for pid, p in zip(pairs["pair_id"], pairs["prompt"])]
    return prompts, pairs["chosen"].astype(str).tolist(), pairs["rejected"].astype(str).tolist()


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None, name: str) -> None:
    """Use eos as pad when the tokenizer has none, and mirror the pad id into the model config."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"reward model {name!r}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(name: str, trust_remote_code: bool, revision: str | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token that truncates from the left, so over-long inputs keep the response end."""
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, truncation_side="left",
                                              revision=revision)
    ensure_pad_token(tokenizer, None, name)
    return tokenizer
