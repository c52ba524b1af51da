"""How a value's reward model is obtained, fed and run: ``RewardModelSettings`` (the ``reward_model`` config)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

INPUT_FORMATS = ("chat_template", "hh_transcript", "text_pair")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class RewardModelSettings:
    """How a value's reward model is obtained, fed and run.

    ``source``: "train" (train one on the value's reward-model split) or a Hugging Face model id / local directory of
    a sequence-classification model (e.g. ``Ray2333/gpt2-large-helpful-reward_model``, fed as "text_pair").
    ``input_format``: "chat_template" (the tokenizer's chat template over prompt + response as assistant message),
    "hh_transcript" ("\\n\\nHuman: ...\\n\\nAssistant: ..." text) or "text_pair" (tokenizer(question, response) with
    the question ending in "\\n\\nAssistant:", as RiC feeds the Ray2333 GPT-2 HH reward models).
    ``revision``: the commit of a hub-id ``source`` (None: main).
    ``lora_r``: LoRA rank on the attention projections (score head fully trained); None = full fine-tune.
    """

    TRAINER_FIELDS: ClassVar[tuple[str, ...]] = (
        "learning_rate", "epochs", "train_batch_size", "seed", "gradient_checkpointing", "save_steps",
    )

    source: str = "train"
    input_format: str = "chat_template"
    batch_size: int = 16
    dtype: str = "float32"
    max_length: int = 512
    trust_remote_code: bool = False
    revision: str | None = None
    learning_rate: float = 5e-5
    epochs: float = 1
    train_batch_size: int = 8
    lora_r: int | None = 16
    seed: int = 42
    backbone_layers: int | None = None
    gradient_checkpointing: bool = False
    save_steps: int = 500
    scorer: str | None = None

    def __post_init__(self) -> None:
        if (self.source == "oracle") != (self.scorer is not None):
            raise ValueError(f"reward_model.scorer={self.scorer!r} goes with source 'oracle' (source={self.source!r})")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"reward_model.input_format={self.input_format!r}: expected one of {INPUT_FORMATS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"reward_model.dtype={self.dtype!r}: expected one of {tuple(DTYPES)}")
        for key in ("batch_size", "max_length", "epochs", "train_batch_size", "save_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"reward_model.{key}={getattr(self, key)!r}: must be >= 1")
        if self.lora_r is not None and self.lora_r < 1:
            raise ValueError(f"reward_model.lora_r={self.lora_r!r}: must be >= 1 or None (full fine-tune)")
        if not self.source:
            raise ValueError("reward_model.source is empty: use 'train' or a model id / directory")

