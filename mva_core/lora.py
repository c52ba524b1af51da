"""LoRA shape of a trained adapter, and the one place it becomes a PEFT ``LoraConfig`` (value vectors, MODPO, SFT)."""
from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig


@dataclass(frozen=True)
class LoraSettings:
    """LoRA shape of a value vector (config section ``lora``).

    ``dropout`` is written to the adapter config, but TRL's ``disable_dropout`` (on by default, as in the trl 0.9.6
    the released code used) sets every dropout, LoRA's included, to 0 while training.
    """

    r: int = 16
    alpha: float = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def peft_config(self) -> LoraConfig:
        """A causal-LM ``LoraConfig`` of this shape (no bias terms)."""
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM")
