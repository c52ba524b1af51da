"""Tiny random-weight Llama models and a small byte-level BPE tokenizer, built in-process.

Used by the test suite and by ``config/smoke.yaml`` so the whole DAG runs in minutes on 2 CPU cores with no
download. The tokenizer is byte-level, so any text (any language, emoji) can be encoded.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>"]
_DEFAULT_CORPUS = [
    "The assistant answers the question helpfully and politely.",
    "I cannot help with that request because it could hurt someone.",
    "Here is a short recipe: mix flour, water and salt, then bake it.",
    "What is the capital of France? The capital of France is Paris.",
    "Please explain how photosynthesis works in simple words.",
    "Human: How do I fix a flat tire? Assistant: First remove the wheel.",
]


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a tiny random Llama (defaults: ~0.2M parameters)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 512,
                         add_bos_token: bool = False) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE tokenizer on ``corpus`` (a small built-in text when None), with a chat template.

    Like SmolLM2's, its BOS token is ``<|im_start|>`` and it puts nothing in front of text; ``add_bos_token`` makes
    it Llama-2-like instead: BOS ``<s>`` (an extra special token), put in front of every text it tokenises."""
    texts = list(corpus) if corpus is not None else _DEFAULT_CORPUS
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + (["<s>"] if add_bos_token else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>",
        bos_token="<s>" if add_bos_token else "<|im_start|>", add_bos_token=add_bos_token,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(tokenizer: PreTrainedTokenizerBase, spec: TinyModelSpec = TinyModelSpec(), seed: int = 0) -> LlamaForCausalLM:
    """A random-weight Llama whose vocabulary matches ``tokenizer`` (deterministic for a given seed)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
