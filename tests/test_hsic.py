"""HSIC estimators and decorrelation penalties."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mva_core.hsic import (
    centred_kernel,
    hsic,
    hsic_delta_w,
    hsic_lora_a,
    hsic_with_centred,
    median_bandwidth,
    rbf_kernel_from_gram,
    squared_distances,
    symmetric_gram,
)
from mva_core.penalties import (
    MEDIAN_PAIRS,
    DecorrelationPenalty,
    LoraPair,
    PenaltySettings,
    collect_lora_pairs,
    sample_rows,
)


def rbf_from_samples(X: torch.Tensor, sigma: float) -> torch.Tensor:
    """Reference kernel from explicit pairwise distances."""
    return torch.exp(-(torch.cdist(X.double(), X.double()) ** 2) / (2 * sigma**2))


def hsic_reference(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) / n^2 with an explicit centring matrix."""
    n = K.shape[0]
    H = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    return torch.trace(K.double() @ H @ L.double() @ H) / n**2


def hsic_of_samples(
    X: torch.Tensor, Y: torch.Tensor, sigma: float | str = "median", normalization: str = "n2"
) -> torch.Tensor:
    return hsic(rbf_kernel_from_gram(X @ X.T, sigma), rbf_kernel_from_gram(Y @ Y.T, sigma), normalization)


def test_hsic_near_zero_for_independent_and_larger_for_dependent_samples():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 3, generator=g)
    independent = hsic_of_samples(X, torch.randn(400, 3, generator=g))
    noisy_copy = hsic_of_samples(X, X + 0.1 * torch.randn(400, 3, generator=g))
    nonlinear = hsic_of_samples(X[:, :1], torch.sin(2 * X[:, :1]))
    assert abs(independent) < 2e-3
    assert noisy_copy > 20 * abs(independent)
    assert nonlinear > 20 * abs(independent)


def test_hsic_matches_explicit_centring_and_normalisations_differ_by_n_ratio():
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    K, L = rbf_from_samples(X, 1.5), rbf_from_samples(Y, 1.5)
    n2 = hsic(K, L, "n2")
    assert torch.isclose(n2.double(), hsic_reference(K, L), rtol=1e-5)
    assert torch.isclose(hsic(K, L, "n_minus_1_sq"), n2 * (7 / 6) ** 2, rtol=1e-6)
    assert hsic(K.double(), L.double()).dtype == torch.float32


def test_rbf_kernel_matches_pairwise_distances_and_median_heuristic():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(9, 5, generator=g)
    assert torch.allclose(rbf_kernel_from_gram(X @ X.T, 0.7).double(), rbf_from_samples(X, 0.7), atol=1e-5)
    dist = torch.cdist(X, X) ** 2
    median = dist[~torch.eye(9, dtype=torch.bool)].median()
    assert torch.allclose(rbf_kernel_from_gram(X @ X.T, "median"), torch.exp(-dist / median), atol=1e-5)
    ones = rbf_kernel_from_gram(torch.zeros(4, 4), "median")  # all distances 0: guarded, no NaN
    assert torch.equal(ones, torch.ones(4, 4))


@pytest.mark.parametrize("sigma", [0, -1.0, "mean", True])
def test_bad_sigma_is_rejected(sigma):
    with pytest.raises(ValueError, match="sigma"):
        rbf_kernel_from_gram(torch.eye(3), sigma)


def random_lora(g: torch.Generator, d_out: int = 12, d_in: int = 10, r: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g)


@pytest.mark.parametrize("rows", [None, torch.tensor([0, 3, 4, 8, 11])])
@pytest.mark.parametrize("normalization", ["n2", "n_minus_1_sq"])
def test_hsic_delta_w_equals_hsic_of_materialised_rows(rows, normalization):
    g = torch.Generator().manual_seed(3)
    (A_u, B_u), (A_v, B_v) = random_lora(g), random_lora(g, r=5)
    dW_u, dW_v = 0.5 * B_u @ A_u, 2.0 * B_v @ A_v
    if rows is not None:
        dW_u, dW_v = dW_u[rows], dW_v[rows]
    sigma = 4.0
    expected = hsic(rbf_from_samples(dW_u, sigma), rbf_from_samples(dW_v, sigma), normalization)
    got = hsic_delta_w(A_u, B_u, 0.5, A_v, B_v, 2.0, sigma, normalization, rows)
    assert torch.isclose(got.double(), expected.double(), rtol=1e-4, atol=1e-7)
    assert got > 0


def test_hsic_delta_w_invariant_to_permuting_rank_components():
    g = torch.Generator().manual_seed(4)
    (A_u, B_u), (A_v, B_v) = random_lora(g), random_lora(g)
    perm = torch.tensor([2, 0, 1])
    base = hsic_delta_w(A_u, B_u, 1.0, A_v, B_v, 1.0, "median")
    permuted = hsic_delta_w(A_u[perm], B_u[:, perm], 1.0, A_v, B_v, 1.0, "median")
    assert torch.isclose(base, permuted, rtol=1e-5)


def test_hsic_lora_a_invariant_to_joint_row_permutation_only():
    g = torch.Generator().manual_seed(5)
    A_u, A_v = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)
    A_v = A_u + 0.1 * A_v  # dependent, so re-pairing the rows lowers the value
    perm = torch.randperm(32, generator=g)
    base = hsic_lora_a(A_u, A_v, sigma="median")
    assert torch.isclose(base, hsic_lora_a(A_u[perm], A_v[perm], sigma="median"), rtol=1e-5)
    assert hsic_lora_a(A_u[perm], A_v, sigma="median") < 0.5 * base


def test_hsic_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        hsic_lora_a(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="same matrix"):
        hsic_delta_w(torch.zeros(2, 3), torch.zeros(4, 2), 1.0, torch.zeros(2, 3), torch.zeros(5, 2), 1.0)
    with pytest.raises(ValueError, match="normalization"):
        hsic(torch.eye(3), torch.eye(3), "n")


def test_median_over_upper_triangle_equals_median_over_all_off_diagonal_pairs():
    g = torch.Generator().manual_seed(6)
    for n in (2, 3, 7, 10):
        X = torch.randn(n, 4, generator=g)
        dist = squared_distances(X @ X.T)
        dist = (dist + dist.T) / 2  # exactly symmetric
        off_diagonal = dist[~torch.eye(n, dtype=torch.bool)]
        assert median_bandwidth(dist).item() == off_diagonal.median().item()
        assert median_bandwidth(dist, max_pairs=n * n).item() == off_diagonal.median().item()  # all pairs fit


def test_subsampled_median_is_deterministic_and_close_to_exact():
    g = torch.Generator().manual_seed(7)
    B, A = torch.randn(3, 256, 8, generator=g), torch.randn(3, 8, 64, generator=g)
    dist = squared_distances(symmetric_gram(B @ A))  # 3 modules of 256 ΔW-like rows: 32 640 pairs each
    exact = median_bandwidth(dist)
    sampled = median_bandwidth(dist, MEDIAN_PAIRS)
    assert sampled.shape == (3, 1, 1) and not sampled.requires_grad
    assert torch.equal(sampled, median_bandwidth(dist.clone(), MEDIAN_PAIRS))
    torch.testing.assert_close(sampled, exact, rtol=0.02, atol=0)
    assert not torch.equal(sampled, exact)  # really a subsample


def test_batched_kernels_match_per_matrix():
    g = torch.Generator().manual_seed(8)
    X = torch.randn(4, 9, 5, generator=g)
    gram = X @ X.mT
    for sigma in (0.7, "median"):
        stacked = rbf_kernel_from_gram(gram, sigma)
        for i in range(4):
            torch.testing.assert_close(stacked[i], rbf_kernel_from_gram(gram[i], sigma))
            shifted = rbf_kernel_from_gram(gram[i], sigma, minus_one=True)
            torch.testing.assert_close(shifted + 1, stacked[i])
            torch.testing.assert_close(centred_kernel(stacked)[i], centred_kernel(shifted), atol=1e-7, rtol=1e-5)


def test_symmetric_gram_gradient():
    g = torch.Generator().manual_seed(9)
    A = torch.randn(3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(symmetric_gram, (A,))
    weights = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)  # not symmetric
    (grad,) = torch.autograd.grad((symmetric_gram(A) * weights).sum(), A)
    (expected,) = torch.autograd.grad(((A @ A.mT) * weights).sum(), A)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("sigma", [1.5, "median"])
def test_hsic_with_centred_value_and_gradient_match_float64_reference(sigma):
    """Fused HSIC against fixed centred kernels = Σ tr(K H L H) / n² per matrix, gradient included."""
    g = torch.Generator().manual_seed(10)
    X, Y = torch.randn(3, 12, 5, generator=g), torch.randn(3, 12, 5, generator=g)
    Y = Y + X  # dependent
    L = rbf_kernel_from_gram(Y @ Y.mT, sigma)
    X64 = X.double().requires_grad_()
    expected = 0
    for i in range(3):
        dist = torch.cdist(X64[i], X64[i]) ** 2
        iu = torch.triu_indices(12, 12, 1)
        two_sigma_sq = dist[iu[0], iu[1]].median().detach() if sigma == "median" else 2 * sigma**2
        expected = expected + hsic_reference(torch.exp(-dist / two_sigma_sq), L[i].double())
    (expected_grad,) = torch.autograd.grad(expected, X64)

    X32 = X.clone().requires_grad_()
    got = hsic_with_centred(symmetric_gram(X32), centred_kernel(L), sigma)
    (grad,) = torch.autograd.grad(got, X32)
    assert torch.isclose(got.double(), expected, rtol=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


def test_hsic_delta_w_is_precise_for_tiny_updates():
    """ΔW rows far smaller than sigma: every kernel entry is 1 - O(1e-8), yet HSIC keeps fp32 relative precision."""
    g = torch.Generator().manual_seed(11)
    (A_u, B_u), (A_v, _) = random_lora(g, d_out=40, d_in=30), random_lora(g, d_out=40, d_in=30)
    B_u = 1e-4 * B_u
    B_v = B_u + 1e-4 * torch.randn(40, 3, generator=g)  # dependent on B_u
    dW_u, dW_v = B_u.double() @ A_u.double(), B_v.double() @ A_v.double()
    expected = hsic_reference(rbf_from_samples(dW_u, 1.0), rbf_from_samples(dW_v, 1.0))
    got = hsic_delta_w(A_u, B_u, 1.0, A_v, B_v, 1.0, sigma=1.0)
    assert expected > 0 and torch.isclose(got.double(), expected, rtol=1e-4)


@pytest.fixture(scope="module")
def two_adapter_model(tiny_llama):
    """Tiny Llama with a trainable adapter 'default' and a frozen adapter 'helpful' (both with nonzero B)."""
    model = copy.deepcopy(tiny_llama)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, config)
    peft_model.add_adapter("helpful", config)
    peft_model.set_adapter("default")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return peft_model


def test_collect_lora_pairs(two_adapter_model):
    pairs = collect_lora_pairs(two_adapter_model, "default", ["helpful"], max_rows=40)
    assert [p.module for p in pairs[:2]] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert len(pairs) == 4 and pairs[0].frozen_adapter == "helpful" and pairs[0].scaling == 2.0
    assert pairs[0].rows is not None and pairs[0].rows.unique().numel() == 40  # q_proj: d_out 64 > 40, sampled
    assert pairs[1].rows is None  # v_proj: d_out 32 <= 40, all rows
    only_q = collect_lora_pairs(two_adapter_model, "default", ["helpful"], modules_regex=r"q_proj$")
    assert [p.module for p in only_q] == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(ValueError, match="'harmless'"):
        collect_lora_pairs(two_adapter_model, "default", ["helpful", "harmless"])
    with pytest.raises(ValueError, match="modules regex 'mlp'"):
        collect_lora_pairs(two_adapter_model, "default", ["helpful"], modules_regex="mlp")


@pytest.mark.parametrize(
    "settings",
    [
        PenaltySettings(kind="hsic", weight=1.0, form="lora_a"),
        PenaltySettings(kind="hsic", weight=1.0, form="delta_w", sigma="median", max_rows=8),
        PenaltySettings(kind="orthogonality", weight=1.0),
    ],
    ids=["lora_a", "delta_w", "orthogonality"],
)
def test_penalty_gradient_reaches_only_the_trained_adapter(two_adapter_model, settings):
    model = two_adapter_model
    for name, param in model.named_parameters():
        param.requires_grad_(".helpful." in name or ".default." in name)  # even a trainable-looking frozen adapter
    pairs = collect_lora_pairs(model, "default", ["helpful"], max_rows=settings.max_rows)
    penalty = DecorrelationPenalty(pairs, settings)()
    assert penalty.ndim == 0 and penalty > 0
    penalty.backward()
    grads = {name: param.grad for name, param in model.named_parameters() if "lora_" in name}
    trained_a = [g for name, g in grads.items() if "lora_A.default" in name]
    assert all(g is not None and g.abs().sum() > 0 for g in trained_a)
    if settings.form == "delta_w":
        assert all(g is not None and g.abs().sum() > 0 for name, g in grads.items() if "lora_B.default" in name)
    assert all(g is None for name, g in grads.items() if ".helpful." in name)
    model.zero_grad(set_to_none=True)
    model.set_adapter("default")


def reference_penalty(pairs: list[LoraPair], settings: PenaltySettings) -> torch.Tensor:
    """The straightforward form: a loop over pairs of the per-pair estimators (exact median bandwidths)."""
    terms = []
    for pair in pairs:
        frozen_A, frozen_B = pair.frozen_A.detach(), pair.frozen_B.detach()
        if settings.kind == "orthogonality":
            terms.append((pair.A @ frozen_A.T).abs().sum())
        elif settings.form == "lora_a":
            terms.append(hsic_lora_a(pair.A, frozen_A, settings.sigma, settings.normalization))
        else:
            terms.append(
                hsic_delta_w(
                    pair.A, pair.B, pair.scaling, frozen_A, frozen_B, pair.frozen_scaling,
                    settings.sigma, settings.normalization, pair.rows,
                )
            )
    return torch.stack(terms).sum()


def random_pairs(seed: int = 12, frozen: int = 2, max_rows: int | None = 8) -> list[LoraPair]:
    """Pairs of a random 'model': six modules of three shapes (d_out 12: ``max_rows`` rows sampled), ``frozen``
    earlier values, the last of them with a different rank (allowed by the delta_w form only), other scalings."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i, (d_out, d_in) in enumerate([(12, 10), (12, 10), (6, 10), (12, 7), (6, 10), (12, 10)]):
        label = f"layer{i}"
        A = torch.nn.Parameter(torch.randn(4, d_in, generator=g) / d_in**0.5)
        B = torch.nn.Parameter(torch.randn(d_out, 4, generator=g))
        rows = sample_rows(label, d_out, max_rows)
        for value in range(frozen):
            r = 4 if value < frozen - 1 else 3
            frozen_A = torch.nn.Parameter(torch.randn(r, d_in, generator=g) / d_in**0.5, requires_grad=False)
            frozen_B = torch.nn.Parameter(torch.randn(d_out, r, generator=g), requires_grad=False)
            pairs.append(LoraPair(label, f"value{value}", A, B, 0.5, frozen_A, frozen_B, 1.5 + value, rows))
    return pairs


def trained_grads(pairs: list[LoraPair], penalty: torch.Tensor) -> list[torch.Tensor]:
    params = list({id(p): p for pair in pairs for p in (pair.A, pair.B)}.values())
    return list(torch.autograd.grad(penalty, params, retain_graph=True, allow_unused=True, materialize_grads=True))


@pytest.mark.parametrize(
    "settings",
    [
        PenaltySettings(kind="hsic", weight=1.0, form="lora_a", sigma=1.0),
        PenaltySettings(kind="hsic", weight=1.0, form="lora_a", sigma="median", normalization="n_minus_1_sq"),
        PenaltySettings(kind="hsic", weight=1.0, form="delta_w", sigma="median"),
        PenaltySettings(kind="hsic", weight=1.0, form="delta_w", sigma=2.0, normalization="n_minus_1_sq"),
        PenaltySettings(kind="orthogonality", weight=1.0),
    ],
    ids=["lora_a", "lora_a-median", "delta_w-median", "delta_w", "orthogonality"],
)
def test_cached_batched_penalty_matches_per_pair_reference(settings, monkeypatch):
    pairs = random_pairs(frozen=2 if settings.form == "delta_w" else 1)
    if settings.form == "lora_a" and settings.kind == "hsic":  # same rank on both sides, two frozen values
        pairs = [p for p in random_pairs(frozen=3) if p.frozen_A.shape == p.A.shape]
    penalty = DecorrelationPenalty(pairs, settings, median_pairs=None)
    built, frozen_kernel = [], DecorrelationPenalty._frozen_kernel

    def counting_frozen_kernel(self, pair):
        built.append(pair)
        return frozen_kernel(self, pair)

    monkeypatch.setattr(DecorrelationPenalty, "_frozen_kernel", counting_frozen_kernel)
    optimizer = torch.optim.SGD(list({id(p): p for pair in pairs for p in (pair.A, pair.B)}.values()), lr=0.05)
    for step in range(3):  # the trained side changes between calls, the frozen side is computed once
        got, expected = penalty(), reference_penalty(pairs, settings)
        assert got.ndim == 0 and got.dtype == torch.float32 and got.requires_grad
        assert torch.isclose(got, expected, rtol=1e-5, atol=1e-7), step
        for g, e in zip(trained_grads(pairs, got), trained_grads(pairs, expected)):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
        optimizer.zero_grad()
        got.backward()
        optimizer.step()
    if settings.kind == "hsic":
        assert len(built) == len(pairs)  # once per pair, on the first call
        for pair in pairs:  # another dtype: the cache is rebuilt
            for param in (pair.frozen_A, pair.frozen_B):
                param.data = param.data.double()
        assert torch.isclose(penalty(), reference_penalty(pairs, settings).float(), rtol=1e-5, atol=1e-7)
        assert len(built) == 2 * len(pairs)


def test_lora_a_penalty_rejects_frozen_adapters_of_another_rank():
    pairs = random_pairs(frozen=1)  # the frozen adapter has rank 3, the trained one rank 4
    with pytest.raises(ValueError, match=r"same r × d_in A: module 'layer0' has \(4, 10\) and \(3, 10\)"):
        DecorrelationPenalty(pairs, PenaltySettings(kind="hsic", weight=1.0, form="lora_a"))
    DecorrelationPenalty(pairs, PenaltySettings(kind="hsic", weight=1.0, form="delta_w"))  # fine for delta_w


def test_subsampled_median_penalty_stays_close_to_exact():
    settings = PenaltySettings(kind="hsic", weight=1.0, form="delta_w", sigma="median", max_rows=256)
    pairs = random_pairs(seed=13, frozen=1, max_rows=256)
    g = torch.Generator().manual_seed(14)
    for pair in pairs:  # 300 output rows, 256 sampled: 32 640 distances per module, the penalty uses MEDIAN_PAIRS
        pair.B = torch.nn.Parameter(torch.randn(300, 4, generator=g))
        pair.frozen_B = torch.nn.Parameter(torch.randn(300, pair.frozen_A.shape[0], generator=g), requires_grad=False)
        pair.rows = sample_rows(pair.module, 300, 256)
    exact = DecorrelationPenalty(pairs, settings, median_pairs=None)()
    sampled = DecorrelationPenalty(pairs, settings)()
    # fp32 (mva_core/hsic.py) sums of 256² kernel terms, batched vs per pair: 1.5e-5 apart with one thread on an
    # AVX-512 CPU; the subsampled median is 7e-4 away, so 1e-4 still tells exact from sampled
    assert torch.isclose(exact, reference_penalty(pairs, settings), rtol=1e-4)
    assert sampled != exact and torch.isclose(sampled, exact, rtol=0.02)
    assert torch.equal(sampled, DecorrelationPenalty(pairs, settings)())  # deterministic
    for g_sampled, g_exact in zip(trained_grads(pairs, sampled), trained_grads(pairs, exact)):
        assert (g_sampled - g_exact).norm() < 0.05 * g_exact.norm()


def make_pair(A: torch.Tensor, frozen_A: torch.Tensor) -> LoraPair:
    B = torch.nn.Parameter(torch.zeros(3, A.shape[0]))
    frozen = torch.nn.Parameter(frozen_A, requires_grad=False)
    return LoraPair("m", "v", torch.nn.Parameter(A), B, 1.0, frozen, B.detach().clone(), 1.0)


def test_orthogonality_penalty_zero_only_for_orthogonal_subspaces():
    settings = PenaltySettings(kind="orthogonality", weight=1.0)
    eye = torch.eye(6)
    assert DecorrelationPenalty([make_pair(eye[:2], eye[2:4])], settings)() == 0
    overlapping = DecorrelationPenalty([make_pair(eye[:2], eye[1:3])], settings)()
    assert torch.isclose(overlapping, torch.tensor(1.0))


def test_penalty_none_is_zero():
    pair = make_pair(torch.eye(4)[:2], torch.eye(4)[:2])
    assert DecorrelationPenalty([pair], PenaltySettings())() == 0
    assert DecorrelationPenalty([], PenaltySettings(kind="hsic", weight=1.0))() == 0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"kind": "l2"}, "kind"),
        ({"weight": -1.0}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"form": "ab"}, "form"),
        ({"sigma": 0.0}, "sigma"),
        ({"normalization": "n"}, "normalization"),
        ({"max_rows": 1}, "max_rows"),
        ({"modules": "("}, "modules"),
    ],
)
def test_penalty_settings_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"PenaltySettings.{field}"):
        PenaltySettings(**kwargs)
