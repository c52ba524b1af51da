"""HSIC between LoRA value vectors (pure torch).

HSIC (Hilbert-Schmidt independence criterion) measures the dependence between two paired samples
x_1..x_n and y_1..y_n through kernel matrices K_ij = k(x_i, x_j) and L_ij = l(y_i, y_j). We use the biased
estimator tr(K H L H) / n^2 (``normalization="n2"``, what the authors' released code computes) or
tr(K H L H) / (n-1)^2 (``"n_minus_1_sq"``, the textbook form), with H = I - 11^T/n, and Gaussian RBF kernels
k(x, x') = exp(-||x - x'||^2 / (2 sigma^2)); ``sigma`` is a number or ``"median"`` (median heuristic per side).

Two ways of turning a pair of LoRA adapters (ΔW = s·B·A, B: d_out × r, A: r × d_in) into paired samples:

- ``hsic_lora_a`` (released code): the r rows of each A are the samples, row k of A_u paired with row k of A_v.
  LoRA rank components have no order, so this pairing is arbitrary; it is kept to reproduce the released code.
- ``hsic_delta_w`` (the paper's intent, HSIC(θ_u, θ_v) on the value vectors themselves): the samples are the
  rows of ΔW, one per output unit, so row i of ΔW_u is paired with row i of ΔW_v (the same output unit).
  Only Gram matrices are needed, G = ΔW_S ΔW_S^T = s^2 B_S (A A^T) B_S^T, so ΔW (d_out × d_in) is never built;
  ``rows`` (S) optionally restricts to sampled output units to cap the O(|S|^2) cost at large d_out. This form is
  invariant to permuting an adapter's rank components (jointly in A and B).

Kernels and HSIC are always computed in fp32, whatever the dtype of the inputs.
"""

from __future__ import annotations

import torch

NORMALIZATIONS = ("n2", "n_minus_1_sq")
_MIN_BANDWIDTH = 1e-12


def check_sigma(sigma: float | str) -> None:
    """Raise ValueError unless ``sigma`` is a positive number or ``"median"``."""
    if isinstance(sigma, str):
        if sigma != "median":
            raise ValueError(f"sigma must be a positive number or 'median', got {sigma!r}")
    elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number or 'median', got {sigma!r}")


def rbf_kernel_from_gram(gram: torch.Tensor, sigma: float | str) -> torch.Tensor:
    """RBF kernel K_ij = exp(-d_ij / (2 sigma^2)) with d_ij = G_ii + G_jj - 2 G_ij (clamped at 0).

    With ``sigma="median"``, 2 sigma^2 is the median off-diagonal d_ij (computed without gradient, floored at 1e-12).
    """
    check_sigma(sigma)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a square matrix, got shape {tuple(gram.shape)}")
    gram = gram.float()
    diag = gram.diagonal()
    dist = (diag[:, None] + diag[None, :] - 2 * gram).clamp_min(0)
    if sigma == "median":
        n = dist.shape[0]
        off_diagonal = dist.detach()[~torch.eye(n, dtype=torch.bool, device=dist.device)]
        two_sigma_sq = off_diagonal.median().clamp_min(_MIN_BANDWIDTH) if n > 1 else dist.new_tensor(1.0)
    else:
        two_sigma_sq = 2.0 * float(sigma) ** 2
    return torch.exp(-dist / two_sigma_sq)


def hsic(K: torch.Tensor, L: torch.Tensor, normalization: str = "n2") -> torch.Tensor:
    """Biased HSIC estimate tr(K H L H) / n^2 (``"n2"``) or / (n-1)^2 (``"n_minus_1_sq"``) of two n × n kernels."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(
            f"K and L must be square matrices of the same shape, got {tuple(K.shape)} and {tuple(L.shape)}"
        )
    n = K.shape[0]
    if n < 2:
        raise ValueError(f"HSIC needs at least 2 samples, got {n}")
    K, L = K.float(), L.float()
    centred = K - K.mean(dim=0, keepdim=True) - K.mean(dim=1, keepdim=True) + K.mean()  # H K H
    denominator = n**2 if normalization == "n2" else (n - 1) ** 2
    return (centred * L).sum() / denominator  # tr(HKH L) with L symmetric


def hsic_lora_a(
    A_u: torch.Tensor, A_v: torch.Tensor, sigma: float | str = 1.0, normalization: str = "n2"
) -> torch.Tensor:
    """Released-code HSIC: the r rows of the LoRA A matrices (r × d_in) are the samples, paired by index."""
    if A_u.ndim != 2 or A_u.shape != A_v.shape:
        raise ValueError(
            f"A_u and A_v must be r × d_in matrices of the same shape, got {tuple(A_u.shape)} and {tuple(A_v.shape)}"
        )
    A_u, A_v = A_u.float(), A_v.float()
    return hsic(rbf_kernel_from_gram(A_u @ A_u.T, sigma), rbf_kernel_from_gram(A_v @ A_v.T, sigma), normalization)


def delta_w_gram(A: torch.Tensor, B: torch.Tensor, scaling: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix of the rows ``rows`` (all when None) of ΔW = scaling·B·A, without building ΔW."""
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"expected B (d_out × r) and A (r × d_in), got B {tuple(B.shape)} and A {tuple(A.shape)}")
    A, B = A.float(), B.float()
    if rows is not None:
        B = B.index_select(0, rows.to(B.device))
    return (scaling**2) * (B @ (A @ A.T) @ B.T)


def hsic_delta_w(
    A_u: torch.Tensor,
    B_u: torch.Tensor,
    s_u: float,
    A_v: torch.Tensor,
    B_v: torch.Tensor,
    s_v: float,
    sigma: float | str = 1.0,
    normalization: str = "n2",
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paper-intent HSIC: the rows of ΔW_u = s_u B_u A_u and ΔW_v = s_v B_v A_v are the samples, paired by output
    unit.

    ``rows`` is an optional LongTensor of output units to use (sampled once, to cap the cost at large d_out).
    The adapters may have different ranks but must target the same d_out × d_in matrix.
    """
    if B_u.shape[0] != B_v.shape[0] or A_u.shape[1] != A_v.shape[1]:
        raise ValueError(
            f"adapters must target the same matrix: ΔW_u is {B_u.shape[0]} × {A_u.shape[1]}, "
            f"ΔW_v is {B_v.shape[0]} × {A_v.shape[1]}"
        )
    K = rbf_kernel_from_gram(delta_w_gram(A_u, B_u, s_u, rows), sigma)
    L = rbf_kernel_from_gram(delta_w_gram(A_v, B_v, s_v, rows), sigma)
    return hsic(K, L, normalization)
