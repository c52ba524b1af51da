"""HSIC estimators and decorrelation penalties."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mva_core.hsic import hsic, hsic_delta_w, hsic_lora_a, rbf_kernel_from_gram
from mva_core.penalties import LoraPair, PenaltySettings, collect_lora_pairs, decorrelation_penalty
from mva_core.tiny import build_tiny_llama, build_tiny_tokenizer


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


@pytest.fixture(scope="module")
def two_adapter_model():
    """Tiny Llama with a trainable adapter 'default' and a frozen adapter 'helpful' (both with nonzero B)."""
    model = build_tiny_llama(build_tiny_tokenizer())
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
    penalty = decorrelation_penalty(pairs, settings)
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


def make_pair(A: torch.Tensor, frozen_A: torch.Tensor) -> LoraPair:
    B = torch.nn.Parameter(torch.zeros(3, A.shape[0]))
    frozen = torch.nn.Parameter(frozen_A, requires_grad=False)
    return LoraPair("m", "v", torch.nn.Parameter(A), B, 1.0, frozen, B.detach().clone(), 1.0)


def test_orthogonality_penalty_zero_only_for_orthogonal_subspaces():
    settings = PenaltySettings(kind="orthogonality", weight=1.0)
    eye = torch.eye(6)
    assert decorrelation_penalty([make_pair(eye[:2], eye[2:4])], settings) == 0
    overlapping = decorrelation_penalty([make_pair(eye[:2], eye[1:3])], settings)
    assert torch.isclose(overlapping, torch.tensor(1.0))


def test_penalty_none_is_zero():
    pair = make_pair(torch.eye(4)[:2], torch.eye(4)[:2])
    assert decorrelation_penalty([pair], PenaltySettings()) == 0
    assert decorrelation_penalty([], PenaltySettings(kind="hsic", weight=1.0)) == 0


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
