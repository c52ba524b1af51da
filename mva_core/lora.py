"""LoRA shape of a trained adapter, and the one place it becomes a PEFT ``LoraConfig`` (value vectors, MODPO, SFT)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
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

    def check_fits(self, model: torch.nn.Module, key: str = "lora.r") -> None:
        """Raise ValueError (naming ``key``) if the rank exceeds the smaller side of a targeted linear layer: such
        a rank adds parameters and memory but no expressiveness (rank(B·A) <= min(in, out))."""
        sizes = {name: min(module.in_features, module.out_features) for name, module in model.named_modules()
                 if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in self.target_modules}
        if sizes and self.r > min(sizes.values()):
            name = min(sizes, key=sizes.get)
            raise ValueError(f"config key '{key}': rank {self.r} exceeds the smaller side ({sizes[name]}) of the "
                             f"targeted layer {name}; use at most {min(sizes.values())}")
