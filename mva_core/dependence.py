"""Scale-invariant dependence between two LoRA value vectors ΔW = s·B·A (B: d_out × r, A: r × d_in).

The authors' HSIC (σ = 1 on rows of A) is nearly constant at LoRA dimensions and shrinks with the vector's norm
(see ``mva_core.decorrelation``), so it cannot show whether two vectors are dependent. The measures here are
unchanged when either vector is multiplied by a scalar and when its rank components are permuted (jointly in A and
B), and never build ΔW:

- ``linear_cka``: linear CKA between the rows of ΔW_u and ΔW_v (samples = output units, paired by unit), i.e. HSIC
  with linear kernels normalised by √(HSIC(u, u)·HSIC(v, v)). With C = centred B (row means removed) every term is
  an r × r trace: HSIC ∝ ‖A_uᵀ C_uᵀ C_v A_v‖²_F = tr(Mᵀ G_u M G_v), M = C_uᵀ C_v, G = A Aᵀ. 1 for identical
  vectors, ≈ 0 for independent random ones. Differentiable; the ``cka`` penalty of ``mva_core.penalties``.
- ``rbf_cka``: the same normalisation with median-bandwidth RBF kernels on ΔW rows (``mva_core.hsic``).
- ``row_overlap`` / ``column_overlap``: ‖Q_uᵀ Q_v‖²_F / min(r_u, r_v), Q an orthonormal basis (thin QR) of the row
  space (of A) or column space (of B): 1 for equal subspaces, r/d on average for independent random ones.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mva_core.adapters import LoraFactors
from mva_core.hsic import centred_kernel, delta_w_gram, rbf_kernel_from_gram

_EPS = 1e-30


def _linear_hsic_terms(A_u: torch.Tensor, B_u: torch.Tensor, A_v: torch.Tensor, B_v: torch.Tensor) -> torch.Tensor:
    """‖X_uᵀ X_v‖²_F for the row-centred X = C·A (scaling omitted: CKA cancels it)."""
    C_u, C_v = B_u - B_u.mean(dim=0, keepdim=True), B_v - B_v.mean(dim=0, keepdim=True)
    M = C_u.T @ C_v
    return torch.trace(M.T @ (A_u @ A_u.T) @ M @ (A_v @ A_v.T))


def linear_cka(A_u: torch.Tensor, B_u: torch.Tensor, A_v: torch.Tensor, B_v: torch.Tensor) -> torch.Tensor:
    """Linear CKA between the rows of ΔW_u and ΔW_v, in [0, 1]; 0 when either update is zero. Differentiable."""
    A_u, B_u, A_v, B_v = (t.double() if t.dtype == torch.float64 else t.float() for t in (A_u, B_u, A_v, B_v))
    cross = _linear_hsic_terms(A_u, B_u, A_v, B_v)
    norm = _linear_hsic_terms(A_u, B_u, A_u, B_u) * _linear_hsic_terms(A_v, B_v, A_v, B_v)
    return cross / torch.sqrt(norm + _EPS)


def rbf_cka(u: LoraFactors, v: LoraFactors, rows: torch.Tensor | None = None) -> float:
    """CKA with median-bandwidth RBF kernels on the rows of ΔW (normalised HSIC), in [0, 1]."""
    K, L = (centred_kernel(rbf_kernel_from_gram(delta_w_gram(A, B, s, rows), "median")) for A, B, s in (u, v))
    return cka_of_centred(K, L)


def cka_of_centred(K: torch.Tensor, L: torch.Tensor) -> float:
    """CKA of two centred kernels: <K, L> / √(<K, K>·<L, L>); NaN when either is zero."""
    cross, self_u, self_v = (float((x * y).sum()) for x, y in ((K, L), (K, K), (L, L)))
    return cross / math.sqrt(self_u * self_v) if self_u > 0 and self_v > 0 else math.nan


def _basis(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(matrix.double(), mode="reduced").Q


def row_overlap(u: LoraFactors, v: LoraFactors) -> float:
    """Overlap of the row spaces of A_u and A_v (ΔW's input directions)."""
    Q_u, Q_v = _basis(u[0].T), _basis(v[0].T)
    return float((Q_u.T @ Q_v).square().sum()) / min(Q_u.shape[1], Q_v.shape[1])


def column_overlap(u: LoraFactors, v: LoraFactors) -> float:
    """Overlap of the column spaces of B_u and B_v (ΔW's output directions); NaN if either B is zero."""
    if not (u[1].any() and v[1].any()):
        return math.nan
    Q_u, Q_v = _basis(u[1]), _basis(v[1])
    return float((Q_u.T @ Q_v).square().sum()) / min(Q_u.shape[1], Q_v.shape[1])


def delta_w_norm(factors: LoraFactors) -> float:
    """Frobenius norm of ΔW = s·B·A from r × r products: ‖ΔW‖² = s² tr((BᵀB)(AAᵀ))."""
    A, B, s = factors[0].double(), factors[1].double(), factors[2]
    return abs(s) * math.sqrt(max(float(((B.T @ B) * (A @ A.T)).sum()), 0.0))


def random_like(factors: LoraFactors, generator: torch.Generator) -> LoraFactors:
    """Gaussian LoRA factors with the shapes and Frobenius norms of ``factors`` (an independent-vector anchor)."""
    A, B, s = factors
    draws = []
    for tensor in (A, B):
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        draws.append((noise * (tensor.double().norm() / noise.norm())).to(tensor.dtype))
    return draws[0], draws[1], s


Measure = Callable[[LoraFactors, LoraFactors], float]
SCALE_INVARIANT: dict[str, Measure] = {
    "cka_linear_delta_w": lambda u, v: float(linear_cka(u[0], u[1], v[0], v[1])),
    "cka_rbf_delta_w": rbf_cka,
    "row_overlap": row_overlap,
    "column_overlap": column_overlap,
}
"""Name → measure, as columns of the decorrelation tables."""
