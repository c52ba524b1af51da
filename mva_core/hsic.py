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

Kernels and HSIC are always computed in fp32, whatever the dtype of the inputs. The estimators use the shifted
kernels K - 1 = expm1(-d / (2 sigma^2)): the centring H removes constants, so HSIC is unchanged, and where the
distances are tiny next to 2 sigma^2 (ΔW rows with sigma = 1) K rounds to 1 in fp32 while K - 1 keeps full
precision. The kernel helpers also take stacks of matrices (..., n, n), which ``mva_core.penalties`` uses to
handle many LoRA modules in one batched operation.
"""

from __future__ import annotations

import functools

import torch

NORMALIZATIONS = ("n2", "n_minus_1_sq")
_MIN_BANDWIDTH = 1e-12
_SUBSAMPLE_SEED = 0


def check_sigma(sigma: float | str) -> None:
    """Raise ValueError unless ``sigma`` is a positive number or ``"median"``."""
    if isinstance(sigma, str):
        if sigma != "median":
            raise ValueError(f"sigma must be a positive number or 'median', got {sigma!r}")
    elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number or 'median', got {sigma!r}")


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def squared_distances(gram: torch.Tensor) -> torch.Tensor:
    """d_ij = G_ii + G_jj - 2 G_ij (clamped at 0) of a Gram matrix or a stack of them (..., n, n)."""
    diag = gram.diagonal(dim1=-2, dim2=-1)
    return torch.add(diag[..., :, None], diag[..., None, :]).sub_(gram, alpha=2).clamp_min_(0)


@functools.cache
def _pair_indices(n: int, max_pairs: int | None, device: torch.device) -> torch.Tensor:
    """Flat indices i·n + j of the pairs i < j of an n × n matrix; at most ``max_pairs`` of them (a fixed draw)."""
    i, j = torch.triu_indices(n, n, offset=1)
    flat = i * n + j
    if max_pairs is not None and flat.numel() > max_pairs:
        generator = torch.Generator().manual_seed(_SUBSAMPLE_SEED)
        flat = flat[torch.randperm(flat.numel(), generator=generator)[:max_pairs].sort().values]
    return flat.to(device)


def median_bandwidth(dist: torch.Tensor, max_pairs: int | None = None) -> torch.Tensor:
    """2 sigma^2 of the median heuristic for each n × n distance matrix of ``dist`` (..., n, n), shaped (..., 1, 1).

    The median of the off-diagonal d_ij, without gradient, floored at 1e-12 (1 when n < 2). It is taken over the
    pairs i < j, which holds each distance once and gives the same value as all i != j (torch.median takes the
    lower middle value). With ``max_pairs`` and more pairs than that, only a fixed subset of ``max_pairs`` pairs
    is used: the same for every matrix and call (a permutation seeded with 0, per n), so results are
    deterministic.
    """
    n = dist.shape[-1]
    if n < 2:
        return dist.new_ones((*dist.shape[:-2], 1, 1))
    pairs = dist.detach().flatten(-2).index_select(-1, _pair_indices(n, max_pairs, dist.device))
    median = pairs.median(dim=-1).values
    return median.clamp_min(_MIN_BANDWIDTH)[..., None, None]


def rbf_kernel_from_gram(gram: torch.Tensor, sigma: float | str, *, minus_one: bool = False) -> torch.Tensor:
    """RBF kernel K_ij = exp(-d_ij / (2 sigma^2)) with d_ij = G_ii + G_jj - 2 G_ij (clamped at 0), in fp32.

    ``gram`` is an n × n Gram matrix or a stack of them (..., n, n). With ``sigma="median"``, 2 sigma^2 is the median
    off-diagonal d_ij of each matrix (``median_bandwidth``, all pairs). With ``minus_one``, returns
    K - 1 = expm1(...) instead: the same HSIC, without fp32 rounding where K is close to 1.
    """
    check_sigma(sigma)
    if gram.ndim < 2 or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"gram must be a square matrix or a stack of them, got shape {tuple(gram.shape)}")
    dist = squared_distances(gram.float())
    return rbf_kernel_from_distances(dist, two_sigma_squared(dist, sigma), minus_one=minus_one)


def two_sigma_squared(dist: torch.Tensor, sigma: float | str) -> torch.Tensor | float:
    """2σ² of an RBF kernel on squared distances ``dist``: the median heuristic (``median_bandwidth``) or fixed."""
    return median_bandwidth(dist) if sigma == "median" else 2.0 * float(sigma) ** 2


def rbf_kernel_from_distances(dist: torch.Tensor, two_sigma_sq: torch.Tensor | float, *,
                              minus_one: bool = False) -> torch.Tensor:
    """exp(-d / 2σ²), or expm1(-d / 2σ²) = K − 1 with ``minus_one``."""
    return torch.expm1(-dist / two_sigma_sq) if minus_one else torch.exp(-dist / two_sigma_sq)


def centred_kernel(K: torch.Tensor, normalization: str = "n2") -> torch.Tensor:
    """H K H / n^2 (``"n2"``) or / (n-1)^2 (``"n_minus_1_sq"``) of an n × n kernel or a stack of them (..., n, n).

    HSIC is then (K' ⊙ centred_kernel(L)).sum() for any K' = K + c (H removes constants), and linear in L.
    """
    _check_normalization(normalization)
    n = K.shape[-1]
    centred = K - K.mean(dim=-2, keepdim=True) - K.mean(dim=-1, keepdim=True) + K.mean(dim=(-2, -1), keepdim=True)
    return centred / (n**2 if normalization == "n2" else (n - 1) ** 2)


def hsic(K: torch.Tensor, L: torch.Tensor, normalization: str = "n2") -> torch.Tensor:
    """Biased HSIC estimate tr(K H L H) / n^2 (``"n2"``) or / (n-1)^2 (``"n_minus_1_sq"``) of two n × n kernels."""
    _check_normalization(normalization)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(
            f"K and L must be square matrices of the same shape, got {tuple(K.shape)} and {tuple(L.shape)}"
        )
    n = K.shape[0]
    if n < 2:
        raise ValueError(f"HSIC needs at least 2 samples, got {n}")
    return (centred_kernel(K.float(), normalization) * L.float()).sum()  # tr(HKH L) with L symmetric


class _SymmetricGram(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(A)
        return A @ A.mT

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (A,) = ctx.saved_tensors
        return (grad + grad.mT) @ A


def symmetric_gram(A: torch.Tensor) -> torch.Tensor:
    """A A^T of a matrix or a stack (..., r, d); the gradient (dG + dG^T) A takes one product instead of two."""
    return _SymmetricGram.apply(A)


class _ShiftedRbfDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gram: torch.Tensor, centred: torch.Tensor, sigma: float | str, median_pairs: int | None):
        kernel = squared_distances(gram)  # becomes K - 1 in place
        if sigma == "median":
            two_sigma_sq = median_bandwidth(kernel, median_pairs)
        else:
            two_sigma_sq = kernel.new_tensor(2.0 * float(sigma) ** 2)
        kernel.div_(-two_sigma_sq).expm1_()
        ctx.save_for_backward(kernel, centred, two_sigma_sq)
        return torch.dot(kernel.flatten(), centred.flatten())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        kernel, centred, two_sigma_sq = ctx.saved_tensors
        # value = Σ (K_ij - 1) C_ij with K_ij = exp(-d_ij / 2σ²) and d_ij = G_ii + G_jj - 2 G_ij, so with
        # W_ij = ∂value/∂d_ij = -K_ij C_ij / 2σ²: ∂value/∂G = -2 W + diag(Σ_j W_ij + Σ_j W_ji).
        d_gram = torch.addcmul(centred, kernel, centred).mul_(2 * grad / two_sigma_sq)  # -2 W (K C = C + (K - 1) C)
        d_gram.diagonal(dim1=-2, dim2=-1).sub_((d_gram.sum(dim=-1) + d_gram.sum(dim=-2)) / 2)
        return d_gram, None, None, None


def hsic_with_centred(
    gram: torch.Tensor, centred: torch.Tensor, sigma: float | str, median_pairs: int | None = None
) -> torch.Tensor:
    """Σ over a stack of Gram matrices (..., n, n) of HSIC(K, L) = Σ_ij (K_ij - 1) C_ij, where K is the RBF kernel
    of ``gram`` (as ``rbf_kernel_from_gram``) and C = ``centred_kernel(L)`` is given (a constant: no gradient).

    The hot path of ``mva_core.penalties.DecorrelationPenalty``: K - 1 is built in place in one fp32 buffer and the
    gradient is written out by hand (autograd would allocate and keep ~6 full-size intermediates). Bandwidth as in
    ``rbf_kernel_from_gram`` (no gradient; ``median_pairs`` subsamples ``median_bandwidth``). The clamp of rounding-
    negative distances at 0 is not differentiated (its gradient is taken as 1): it only occurs for duplicate samples,
    where the gradient through G = X X^T vanishes anyway.
    """
    check_sigma(sigma)
    if gram.ndim < 2 or gram.shape[-1] != gram.shape[-2] or centred.shape != gram.shape:
        raise ValueError(f"expected equal stacks of square matrices, got {tuple(gram.shape)}, {tuple(centred.shape)}")
    return _ShiftedRbfDot.apply(gram.float(), centred.float().contiguous(), sigma, median_pairs)


def hsic_lora_a(
    A_u: torch.Tensor, A_v: torch.Tensor, sigma: float | str = 1.0, normalization: str = "n2"
) -> torch.Tensor:
    """Released-code HSIC: the r rows of the LoRA A matrices (r × d_in) are the samples, paired by index."""
    if A_u.ndim != 2 or A_u.shape != A_v.shape:
        raise ValueError(
            f"A_u and A_v must be r × d_in matrices of the same shape, got {tuple(A_u.shape)} and {tuple(A_v.shape)}"
        )
    A_u, A_v = A_u.float(), A_v.float()
    K = rbf_kernel_from_gram(A_u @ A_u.T, sigma, minus_one=True)
    L = rbf_kernel_from_gram(A_v @ A_v.T, sigma, minus_one=True)
    return hsic(K, L, normalization)


def delta_w_gram(
    A: torch.Tensor, B: torch.Tensor, scaling: float | torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Gram matrix of the rows ``rows`` (all when None) of ΔW = scaling·B·A, without building ΔW.

    Also batched: A (..., r, d_in) and B (..., d_out, r) give (..., n, n) (``rows`` then applies to every matrix).
    """
    if A.ndim < 2 or B.ndim != A.ndim or B.shape[-1] != A.shape[-2] or B.shape[:-2] != A.shape[:-2]:
        raise ValueError(f"expected B (d_out × r) and A (r × d_in), got B {tuple(B.shape)} and A {tuple(A.shape)}")
    A, B = A.float(), B.float()
    if rows is not None:
        B = B.index_select(-2, rows.to(B.device))
    return B @ (scaling**2 * symmetric_gram(A)) @ B.mT


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
    if A_u.ndim != 2 or A_v.ndim != 2 or B_u.shape[0] != B_v.shape[0] or A_u.shape[1] != A_v.shape[1]:
        raise ValueError(
            f"adapters must target the same matrix: ΔW_u is {B_u.shape[0]} × {A_u.shape[-1]}, "
            f"ΔW_v is {B_v.shape[0]} × {A_v.shape[-1]}"
        )
    K = rbf_kernel_from_gram(delta_w_gram(A_u, B_u, s_u, rows), sigma, minus_one=True)
    L = rbf_kernel_from_gram(delta_w_gram(A_v, B_v, s_v, rows), sigma, minus_one=True)
    return hsic(K, L, normalization)
