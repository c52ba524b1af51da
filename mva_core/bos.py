"""The beginning-of-sequence token: exactly one, first, wherever the tokenizer expects one.

Llama-2's tokenizer puts ``<s>`` in front of plain text (``tokenizer(text)``), and the model was trained with it
there. Here every prompt is rendered through the tokenizer's chat template and tokenised without special tokens
(TRL's DPO and SFT trainers and ``mva_core.generation`` alike), so that a template that writes its own BOS does not
get a second one; a template that writes none, such as the HH transcript (``mva_core.base_model``), would never show
the model its ``<s>``. ``ensure_chat_ready`` therefore starts such a template with ``BOS_PREFIX`` when the tokenizer
expects a BOS. Tokenizers that put nothing in front of text (SmolLM2, GPT-2) keep their template and token ids.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transformers import PreTrainedTokenizerBase

BOS_PREFIX = "{{ bos_token }}"
_PROBE = [{"role": "user", "content": "a"}]


def expected_bos(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The BOS id ``tokenizer`` puts in front of plain text, or None when it puts none there."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos if bos is not None and ids[:1] == [bos] else None


def template_renders_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template starts a rendered prompt with its BOS token."""
    text = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def check_leading_bos(ids: Sequence[int], bos: int | None, where: str) -> None:
    """Raise ValueError unless ``ids`` start with exactly one ``bos`` (nothing is checked when ``bos`` is None)."""
    if bos is None:
        return
    if list(ids[:1]) != [bos] or list(ids[1:2]) == [bos]:
        found = "two BOS tokens" if list(ids[:2]) == [bos, bos] else f"token {ids[0] if ids else None!r}"
        raise ValueError(f"{where}: the tokenizer expects one BOS token (id {bos}) first, but the chat template gave "
                         f"{found}. The policy's tokenizer was saved before its template got a BOS "
                         "(mva_core.bos): prepare the base model again (delete results/<run>/models/base)")
