"""Reading saved PEFT LoRA adapters (value vectors) from disk: ``{module: (A, B, scaling)}``, and writing one.

One reader serves every consumer (``combine`` for generation and export, ``decorrelation`` for the diagnostics), so
all of them see the same modules, factors and scaling (alpha/r, or alpha/sqrt(r) with rsLoRA) and refuse the same
unsupported adapters.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mva_core.artifacts import verify_artifact

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}
# adapter_config.json options that change the forward pass beyond W + s·B·A; each must be off.
_UNSUPPORTED_OPTIONS = (
    "use_dora", "use_qalora", "use_bdlora", "lora_bias", "fan_in_fan_out", "modules_to_save", "alpha_pattern",
    "trainable_token_indices", "layer_replication", "target_parameters", "alora_invocation_tokens", "arrow_config",
)

LoraFactors = tuple[Tensor, Tensor, float]
"""(A (r×d_in), B (d_out×r), scaling) of one module: ΔW = scaling·B·A."""


def read_value_vector(adapter_dir: str | os.PathLike) -> dict[str, LoraFactors]:
    """``{module path in the base model: (A, B, scaling)}`` of a saved PEFT LoRA adapter, after verifying the
    directory's checksums; the rank of each module is that of its factors."""
    folder = Path(adapter_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"value vector {folder}: missing {name}")
    verify_artifact(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    _check_config(config, folder)
    factors: dict[str, dict[str, Tensor]] = {}
    for key, tensor in load_file(folder / ADAPTER_WEIGHTS).items():
        module, part = _split_key(key, folder)
        if not torch.isfinite(tensor).all():
            raise ValueError(f"value vector {folder}: tensor {key} holds NaN or inf")
        factors.setdefault(module, {})[part] = tensor
    if not factors:
        raise ValueError(f"value vector {folder}: no LoRA A/B weights in {ADAPTER_WEIGHTS}")
    return {module: _with_scaling(parts, config, folder, module) for module, parts in factors.items()}


def _check_config(config: dict, folder: Path) -> None:
    if config.get("peft_type") != "LORA":
        raise ValueError(f"value vector {folder}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("bias", "none") != "none":
        raise ValueError(f"value vector {folder}: bias={config['bias']!r} is unsupported (need 'none')")
    enabled = [key for key in _UNSUPPORTED_OPTIONS if config.get(key)]
    if enabled:
        raise ValueError(f"value vector {folder}: unsupported adapter_config options {enabled}")


def _split_key(key: str, folder: Path) -> tuple[str, str]:
    for suffix, part in _SUFFIXES.items():
        if key.startswith(_PREFIX) and key.endswith(suffix):
            return key[len(_PREFIX): -len(suffix)], part
    raise ValueError(f"value vector {folder}: unexpected tensor {key!r} (only LoRA A/B weights are supported)")


def _with_scaling(parts: dict[str, Tensor], config: dict, folder: Path, module: str) -> LoraFactors:
    if set(parts) != {"A", "B"}:
        raise ValueError(f"value vector {folder}: module {module} has only lora_{''.join(parts)}")
    a, b = parts["A"], parts["B"]
    rank = a.shape[0]
    if b.shape[1] != rank:
        raise ValueError(f"value vector {folder}: module {module} has A rank {rank} but B rank {b.shape[1]}")
    alpha = config["lora_alpha"]
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return a, b, float(scaling)


def save_lora_adapter(folder: str | os.PathLike, factors: dict[str, tuple[Tensor, Tensor]], base_model_name_or_path: str,
                      revision: str | None = None) -> None:
    """Write ``{module path: (A, B)}`` (one rank for all) as a PEFT LoRA adapter with scaling 1 (``lora_alpha`` =
    rank, no rsLoRA) on exactly those modules: ``PeftModel.from_pretrained(base, folder)`` adds B·A to each."""
    from peft import LoraConfig

    ranks = {a.shape[0] for a, _ in factors.values()}
    if len(ranks) != 1:
        raise ValueError(f"a LoRA adapter needs one rank for every module; got ranks {sorted(ranks)}")
    rank = ranks.pop()
    config = LoraConfig(r=rank, lora_alpha=rank, use_rslora=False, lora_dropout=0.0, bias="none",
                        target_modules=list(factors), task_type="CAUSAL_LM",
                        base_model_name_or_path=base_model_name_or_path, revision=revision)
    config.save_pretrained(str(folder))
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = b.contiguous()
    save_file(tensors, Path(folder) / ADAPTER_WEIGHTS)
