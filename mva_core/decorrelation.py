"""Decorrelation diagnostics between saved value vectors (LoRA adapters), read straight from disk.

For every LoRA module shared by two adapters: HSIC in both forms of ``mva_core.hsic`` and the cosine similarity
of the flattened updates, <ΔW_u, ΔW_v> / (|ΔW_u| |ΔW_v|) with <ΔW_u, ΔW_v> = s_u s_v tr((B_u^T B_v)(A_v A_u^T)),
so ΔW is never materialised.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from mva_core.hsic import hsic_delta_w, hsic_lora_a
from mva_core.penalties import module_label

LoraFactors = tuple[torch.Tensor, torch.Tensor, float]
METRICS = ("hsic_lora_a_sigma1", "hsic_lora_a_median", "hsic_delta_w_sigma1", "hsic_delta_w_median", "cosine_delta_w")
"""Every table uses these estimator settings, whatever penalty a method trained with, so rows are comparable:
HSIC with σ = 1 (the released code) and with the median heuristic (the code's ``sigma: median``: 2σ² = median
squared distance), biased estimator over n², on all rows."""


def read_adapter(adapter_dir: str | os.PathLike) -> dict[str, LoraFactors]:
    """Module name -> (A, B, scaling) of a saved PEFT LoRA adapter (scaling alpha/r, or alpha/sqrt(r) with rsLoRA)."""
    directory = Path(adapter_dir)
    config_path, weights_path = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"adapter file missing: {path}")
    config = json.loads(config_path.read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{config_path}: peft_type must be 'LORA', got {config.get('peft_type')!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise ValueError(f"{config_path}: per-module {key} is not supported")
    r, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r

    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(weights_path).items():
        for part in ("A", "B"):
            suffix = f".lora_{part}.weight"
            if key.endswith(suffix):
                factors.setdefault(module_label(key[: -len(suffix)]), {})[part] = tensor
    if not factors:
        raise ValueError(f"{weights_path}: no LoRA A/B weights found")
    adapter = {}
    for module, parts in sorted(factors.items()):
        if set(parts) != {"A", "B"}:
            raise ValueError(f"{weights_path}: module {module!r} has lora_{set(parts).pop()} without its partner")
        adapter[module] = (parts["A"], parts["B"], scaling)
    return adapter


def cosine_delta_w(u: LoraFactors, v: LoraFactors) -> float:
    """Cosine of the flattened ΔW_u and ΔW_v via traces of r × r products (fp64; NaN when either update is zero)."""
    (A_u, B_u, s_u), (A_v, B_v, s_v) = [(A.double(), B.double(), s) for A, B, s in (u, v)]

    def inner(A_x, B_x, s_x, A_y, B_y, s_y) -> float:
        return s_x * s_y * float(((B_x.T @ B_y) * (A_y @ A_x.T).T).sum())  # tr(XY) = sum(X * Y^T)

    norm_sq = inner(A_u, B_u, s_u, A_u, B_u, s_u) * inner(A_v, B_v, s_v, A_v, B_v, s_v)
    return inner(A_u, B_u, s_u, A_v, B_v, s_v) / math.sqrt(norm_sq) if norm_sq > 0 else math.nan


def decorrelation_table(adapters: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """One row per shared LoRA module and pair of values (in the given order): the :data:`METRICS`."""
    if len(adapters) < 2:
        raise ValueError(f"need at least two adapters to compare, got {list(adapters)}")
    loaded = {value: read_adapter(path) for value, path in adapters.items()}
    records = []
    for value_a, value_b in itertools.combinations(loaded, 2):
        shared = sorted(set(loaded[value_a]) & set(loaded[value_b]))
        if not shared:
            raise ValueError(f"adapters {value_a!r} and {value_b!r} share no LoRA modules")
        for module in shared:
            u, v = loaded[value_a][module], loaded[value_b][module]
            with torch.no_grad():
                record = {"module": module, "value_a": value_a, "value_b": value_b}
                for name, sigma in (("sigma1", 1.0), ("median", "median")):
                    record[f"hsic_lora_a_{name}"] = float(hsic_lora_a(u[0], v[0], sigma, "n2"))
                    record[f"hsic_delta_w_{name}"] = float(hsic_delta_w(*u, *v, sigma, "n2", None))
                record["cosine_delta_w"] = cosine_delta_w(u, v)
                records.append(record)
    return pd.DataFrame.from_records(records, columns=["module", "value_a", "value_b", *METRICS])


def summarize_decorrelation(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per value pair, with the number of modules averaged."""
    summary = table.groupby(["value_a", "value_b"], sort=False)[list(METRICS)].mean()
    summary.insert(0, "n_modules", table.groupby(["value_a", "value_b"], sort=False).size())
    return summary.reset_index()
