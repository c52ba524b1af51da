"""Value vectors computed from trained ones, without training (method types ``projection`` and ``planted``).

- **Projection**, a cheap decorrelation baseline: a later value's vector ΔW_v = s·B·A with its components in the
  earlier values' spaces removed, per LoRA module: B' = (I − QQᵀ)·B (side ``columns``: Q an orthonormal basis of
  the earlier vectors' column spaces, their B's columns), A' = A·(I − PPᵀ) (``rows``: P a basis of their row spaces,
  their A's rows), or both. Q and P each come from one fp64 QR (column pivoting, truncated at the numerical rank) of
  all earlier vectors' factors side by side, not from successive projections. The result is a LoRA adapter of the
  same rank; a module no earlier vector has is kept as it is.
- **Planted**, a control of known extra interference: ΔW_v − c·Σ_u ΔW_u over the earlier values u, stated exactly as
  one LoRA adapter of rank r_v + Σ_u r_u (``combine.stacked_lora``: A's stacked, B's side by side, scaling 1).

Projecting a planted vector gives the projection of the vector it was planted in, on every side: the planted term's
B columns lie in the span of Q and its A rows in the span of P, so (I − QQᵀ)·B_u = 0 and A_u·(I − PPᵀ) = 0.

Both are written like trained value vectors: a PEFT adapter with scaling 1 (``adapters.save_lora_adapter``),
``metadata.json`` (``training.records``: stage, the model the sources were trained on, settings, sources, ΔW norms),
provenance and checksums (``artifacts.atomic_directory``).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from mva_core.adapters import ADAPTER_CONFIG, LoraFactors, read_value_vector, save_lora_adapter
from mva_core.artifacts import atomic_directory
from mva_core.combine import stacked_lora
from mva_core.dependence import delta_w_norm
from mva_core.training.records import TrainingMetadata, read_metadata

SIDES = ("rows", "columns", "both")
"""Which of ΔW's spaces a projection removes the earlier vectors from: input directions (A's rows), output
directions (B's columns), or both."""
PROJECTION_STAGE, PLANTED_STAGE = "projection", "planted"


def orthonormal_basis(matrix: Tensor) -> Tensor:
    """An orthonormal basis (fp64, d × rank) of the column space of ``matrix`` (d × n): Q of one QR with column
    pivoting, keeping the columns whose |R_ii| exceeds max(d, n)·eps·|R_00| (a zero matrix has an empty basis)."""
    q, r, _ = scipy.linalg.qr(matrix.double().numpy(), mode="economic", pivoting=True)
    diagonal = np.abs(np.diag(r))
    if diagonal.size == 0 or diagonal[0] == 0:
        return torch.zeros(matrix.shape[0], 0, dtype=torch.float64)
    rank = int((diagonal > max(matrix.shape) * np.finfo(np.float64).eps * diagonal[0]).sum())
    return torch.from_numpy(np.ascontiguousarray(q[:, :rank]))


def project_module(factors: LoraFactors, earlier: Sequence[LoraFactors], sides: str) -> tuple[Tensor, Tensor]:
    """(A', B') in fp64 with B'·A' the projection of s·B·A off the ``earlier`` vectors' spaces on ``sides`` (the
    scaling s folded into B')."""
    if sides not in SIDES:
        raise ValueError(f"sides {sides!r} is not one of {list(SIDES)}")
    a, b, scaling = factors
    a, b = a.double(), b.double() * scaling
    if earlier and sides in ("columns", "both"):
        q = orthonormal_basis(torch.cat([u_b for _, u_b, _ in earlier], dim=1))
        b = b - q @ (q.T @ b)
    if earlier and sides in ("rows", "both"):
        p = orthonormal_basis(torch.cat([u_a for u_a, _, _ in earlier], dim=0).T)
        a = a - (a @ p) @ p.T
    return a, b


def projected_factors(vector: Mapping[str, LoraFactors], earlier: Sequence[Mapping[str, LoraFactors]],
                      sides: str) -> dict[str, tuple[Tensor, Tensor]]:
    """``{module: (A', B')}`` (fp64, scaling 1) of ``vector`` projected, module by module, off the earlier vectors
    that have the module (``project_module``)."""
    return {module: project_module(factors, [u[module] for u in earlier if module in u], sides)
            for module, factors in vector.items()}


def write_projection(source: str | os.PathLike, earlier: Mapping[str, str | os.PathLike], output_dir: str | os.PathLike,
                     sides: str) -> Path:
    """Write the vector in ``source`` projected off the ``earlier`` vectors (value -> directory) on ``sides``."""
    if not earlier:
        raise ValueError(f"projection of {source}: no earlier value vectors to project off")
    factors = projected_factors(read_value_vector(source), [read_value_vector(path) for path in earlier.values()], sides)
    return _write(output_dir, factors, source, earlier, PROJECTION_STAGE, {"sides": sides})


def write_planted(source: str | os.PathLike, earlier: Mapping[str, str | os.PathLike], output_dir: str | os.PathLike,
                  c: float) -> Path:
    """Write ΔW_source − c·Σ_u ΔW_u over the ``earlier`` vectors u (value -> directory) as one exact LoRA adapter."""
    if not earlier:
        raise ValueError(f"planted vector from {source}: no earlier value vectors to plant")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"planted vector from {source}: c must be a finite number > 0, got {c}")
    key = "planted into"  # a name no value has: values are identifiers
    factors = stacked_lora({key: source, **earlier}, {key: 1.0, **{value: -c for value in earlier}})
    return _write(output_dir, factors, source, earlier, PLANTED_STAGE, {"c": c})


def _write(output_dir: str | os.PathLike, factors: Mapping[str, tuple[Tensor, Tensor]], source: str | os.PathLike,
           earlier: Mapping[str, str | os.PathLike], stage: str, settings: dict[str, Any]) -> Path:
    """Save ``factors`` (scaling 1) as a PEFT adapter on the base ``source`` names, with its ``metadata.json``."""
    source_config = json.loads((Path(source) / ADAPTER_CONFIG).read_text())
    norms = {module: delta_w_norm((a, b, 1.0)) for module, (a, b) in factors.items()}
    metadata = TrainingMetadata(
        stage=stage,
        start_model_dir=_start_model_dir(source, source_config),
        settings={stage: settings},
        details={"source": str(source), "earlier_vectors": {value: str(path) for value, path in earlier.items()},
                 "delta_w_norms": {**norms, "total": math.sqrt(sum(n * n for n in norms.values()))}},
    )
    with atomic_directory(output_dir) as folder:
        save_lora_adapter(folder, {module: (a.float(), b.float()) for module, (a, b) in factors.items()},
                          source_config["base_model_name_or_path"], source_config.get("revision"))
        metadata.write(folder)
    return Path(output_dir)


def _start_model_dir(source: str | os.PathLike, source_config: Mapping[str, Any]) -> str:
    """The model the source vector was trained on: its metadata's, else the base its adapter config names."""
    recorded = read_metadata(source)
    return recorded["start_model_dir"] if recorded else source_config["base_model_name_or_path"]
