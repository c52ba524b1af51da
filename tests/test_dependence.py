"""Scale-invariant dependence measures (issue 14): identity, null, scale and rank-order invariance, gradients;
and the anchors that expose the degenerate σ = 1 HSIC."""
from __future__ import annotations

import math
import zlib

import pandas as pd
import pytest
import torch

from mva_core.decorrelation import INSIDE, MEASURES, measure_reading, module_record, rescaled_like
from mva_core.dependence import SCALE_INVARIANT, delta_w_norm, linear_cka, random_like, rbf_cka
from mva_core.hsic import hsic_delta_w, hsic_lora_a
from mva_core.summary import decorrelation_lines

R, D_IN, D_OUT = 8, 96, 64


def factors(seed: int, scale: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(R, D_IN, generator=g) * scale, torch.randn(D_OUT, R, generator=g) * scale, 2.0


@pytest.mark.parametrize("name", list(SCALE_INVARIANT))
def test_identical_vectors_give_one(name):
    u = factors(0)
    assert SCALE_INVARIANT[name](u, u) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name, null", [("row_overlap", R / D_IN), ("column_overlap", R / D_OUT),
                                        ("cka_linear_delta_w", R / D_OUT), ("cka_rbf_delta_w", None)])
def test_independent_random_vectors_sit_near_the_null(name, null):
    values = torch.tensor([SCALE_INVARIANT[name](factors(2 * i), factors(2 * i + 1)) for i in range(40)])
    if null is None:
        assert values.mean() < 0.3
    else:
        assert values.mean() == pytest.approx(null, rel=0.35)
    assert values.max() < 0.5


@pytest.mark.parametrize("name", list(SCALE_INVARIANT))
def test_scaling_the_trained_vector_changes_nothing(name):
    u, v = factors(0), factors(1)
    mixed = (v[0] + 0.5 * u[0], v[1] + 0.5 * u[1], v[2])  # a dependent pair, so the value is not near 0
    shrunk = (mixed[0] * 0.3, mixed[1] * 0.2, mixed[2])
    assert SCALE_INVARIANT[name](u, shrunk) == pytest.approx(SCALE_INVARIANT[name](u, mixed), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", list(SCALE_INVARIANT))
def test_order_of_rank_components_does_not_matter(name):
    u, v = factors(0), factors(1)
    mixed = (v[0] + u[0], v[1] + u[1], v[2])
    perm = torch.randperm(R, generator=torch.Generator().manual_seed(3))
    permuted = (mixed[0][perm], mixed[1][:, perm], mixed[2])  # the same ΔW
    assert SCALE_INVARIANT[name](u, permuted) == pytest.approx(SCALE_INVARIANT[name](u, mixed), rel=1e-4, abs=1e-6)


def test_linear_cka_gradient_matches_float64_autograd():
    (A_u, B_u, _), (A_v, B_v, _) = factors(0), factors(1)
    grads = []
    for dtype in (torch.float32, torch.float64):
        A, B = A_u.to(dtype).clone().requires_grad_(), B_u.to(dtype).clone().requires_grad_()
        linear_cka(A, B, A_v.to(dtype), B_v.to(dtype)).backward()
        grads.append((A.grad.double(), B.grad.double()))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-6)
    assert grads[1][0].abs().sum() > 0


def test_linear_cka_gradient_is_not_along_the_vector():
    """Unlike the σ = 1 HSIC, descending CKA does not just shrink A: its gradient is orthogonal to A (scale
    invariance: d/dt CKA(tA) = 0)."""
    (A_u, B_u, _), (A_v, B_v, _) = factors(0), factors(1)
    A = (A_u + A_v).clone().requires_grad_()
    linear_cka(A, B_u + B_v, A_v, B_v).backward()
    cosine = torch.nn.functional.cosine_similarity(A.grad.flatten(), A.detach().flatten(), dim=0)
    assert abs(float(cosine)) < 1e-4


def test_delta_w_norm_matches_the_materialised_update():
    A, B, s = factors(0)
    assert delta_w_norm((A, B, s)) == pytest.approx(float((s * B @ A).norm()), rel=1e-5)


def test_random_anchor_keeps_shapes_and_norms():
    u = factors(0)
    A, B, s = random_like(u, torch.Generator().manual_seed(0))
    assert A.shape == u[0].shape and B.shape == u[1].shape and s == u[2]
    assert float(A.norm()) == pytest.approx(float(u[0].norm()), rel=1e-5)
    assert float(B.norm()) == pytest.approx(float(u[1].norm()), rel=1e-5)


def test_anchors_expose_the_sigma1_hsic_and_keep_cka_informative():
    """At LoRA dimensions σ = 1 HSIC on A rows cannot tell a vector from itself: its self anchor lies inside the
    independent range. Linear CKA of a strongly dependent pair lies far above that range."""
    u = factors(0, scale=1 / D_IN**0.5)  # kaiming-like A rows: pairwise distances all about equal
    v = (u[0] + 0.1 * factors(1)[0], u[1] + 0.1 * factors(1)[1], 2.0)  # nearly the same vector
    record = module_record("layer.q_proj", u, v, draws=20)
    assert record["hsic_lora_a_sigma1_indep_lo"] <= record["hsic_lora_a_sigma1"] * 1.05
    assert record["hsic_lora_a_sigma1_self"] < 1.1 * record["hsic_lora_a_sigma1_indep_hi"]
    assert record["hsic_lora_a_sigma1_kernel_std"] < 0.1 < record["hsic_delta_w_median_kernel_std"]
    assert record["cka_linear_delta_w"] > 0.8 > record["cka_linear_delta_w_indep_hi"]
    assert set(MEASURES) <= {key for key in record}


def _independent_table(modules: int = 10, scale: float = 0.05) -> pd.DataFrame:
    """Decorrelation rows for truly independent random vectors on ``modules`` modules."""
    records = [module_record(f"layer.{i}.q_proj", factors(2 * i, scale), factors(2 * i + 1, scale), draws=20)
               for i in range(modules)]
    return pd.DataFrame(records).assign(value_a="a", value_b="b")


@pytest.mark.parametrize("name", ["cosine_delta_w", "cka_linear_delta_w"])
def test_cosine_and_cka_discriminate_and_read_independent_vectors_as_inside(name):
    """Issue 23: their self anchor (1) lies far outside the random range, so they can detect dependence; truly
    independent vectors then read "inside" (they look independent), not "uninformative"."""
    table = _independent_table()
    assert (table[f"{name}_self"] > table[f"{name}_indep_hi"]).all() and table[f"{name}_discriminates"].all()
    assert (table[f"{name}_reading"] == INSIDE).mean() >= 0.6  # about 19/21 per module: a 21st draw of 21
    assert measure_reading(table, name)["reading"] == INSIDE
    line = next(row for row in "\n".join(decorrelation_lines({"soup": table})).splitlines() if f"| {name} |" in row)
    assert line.endswith("| inside |") and "uninformative" not in line


def test_a_dependent_pair_reads_above_the_independent_range():
    u = factors(0)
    v = (u[0] + 0.3 * factors(1)[0], u[1] + 0.3 * factors(1)[1], 2.0)
    record = module_record("layer.q_proj", u, v, draws=20)
    assert record["cka_linear_delta_w_reading"] == "above" and record["cka_linear_delta_w_discriminates"]


def test_hsic_at_saturation_does_not_discriminate():
    """Huge norms with σ = 1: every kernel entry is 0 (the kernel collapsed to the identity) on both vectors, so
    the σ = 1 HSIC is one constant whatever the vectors: it cannot discriminate, and the summary says so."""
    table = _independent_table(modules=3, scale=1.0)  # squared row distances of ~50 and more: exp(-d/2) ≈ 0
    for name in ("hsic_lora_a_sigma1", "hsic_delta_w_sigma1"):
        assert table[f"{name}_saturated"].all() and not table[f"{name}_discriminates"].any()
        assert measure_reading(table, name)["reading"] == "uninformative"
    assert table["cka_linear_delta_w_discriminates"].all()  # scale-invariant: unaffected by the norms


def test_saturation_is_checked_on_the_second_vector_too():
    u, v = factors(0), factors(1, scale=1.0)  # only v's kernel collapses
    record = module_record("layer.q_proj", u, v, draws=2)
    assert record["hsic_delta_w_sigma1_saturated"] and not record["hsic_delta_w_sigma1_discriminates"]
    assert not record["hsic_delta_w_median_saturated"]  # the median bandwidth follows the norms


def test_self_anchor_is_taken_at_the_second_vectors_norms():
    """σ = 1 HSIC is not scale-invariant: its self anchor is u against u rescaled to v's norms per LoRA factor
    (the norms the random anchors are compared at); scale-invariant measures still give 1."""
    u, v = factors(0), factors(1, scale=0.2)
    A, B, s = rescaled_like(u, v)
    assert float(A.norm()) == pytest.approx(float(v[0].norm()), rel=1e-5) and s == v[2]
    assert float(B.norm()) == pytest.approx(float(v[1].norm()), rel=1e-5)
    record = module_record("layer.q_proj", u, v, draws=2)
    expected = MEASURES["hsic_delta_w_sigma1"](u, (A, B, s))
    assert record["hsic_delta_w_sigma1_self"] == pytest.approx(expected, rel=1e-6)
    assert record["hsic_delta_w_sigma1_self"] != pytest.approx(MEASURES["hsic_delta_w_sigma1"](u, u), rel=0.1)
    assert record["cka_linear_delta_w_self"] == pytest.approx(1.0, abs=1e-5)


def test_measure_reading_counts_positions_and_needs_discrimination_on_half_the_modules():
    table = pd.DataFrame({"m_reading": ["above", "inside", "inside", "below"],
                          "m_discriminates": [True, True, True, False]})
    assert measure_reading(table, "m") == {"discriminates": 0.75, "above": 0.25, "inside": 0.5, "below": 0.25,
                                           "reading": "inside"}
    assert measure_reading(table.assign(m_discriminates=[True, False, False, False]), "m")["reading"] == "uninformative"
    tie = table.assign(m_reading=["above", "above", "inside", "inside"], m_discriminates=True)
    assert measure_reading(tie, "m")["reading"] == "mixed"


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def test_kernels_built_once_give_the_same_bits_as_every_measure_alone():
    """module_record builds each vector's kernels once and shares them across measures and comparisons: every value,
    self anchor and independent range equals the measure computed alone (exactly), and the measures equal the
    library's own HSIC forms and RBF CKA (also exactly), including the NaN of A-row HSIC across ranks."""
    u, v = factors(0), factors(1, scale=0.2)
    record = module_record("layer.q_proj", u, v, draws=3)
    generator = torch.Generator().manual_seed(zlib.crc32(b"layer.q_proj"))
    randoms = [random_like(u, generator) for _ in range(3)]
    for name, measure in MEASURES.items():
        independent = [measure(random, v) for random in randoms]
        assert _same(record[name], measure(u, v)) and _same(record[f"{name}_self"], measure(u, rescaled_like(u, v)))
        assert record[f"{name}_indep_lo"] == min(independent) and record[f"{name}_indep_hi"] == max(independent)
    for sigma, label in ((1.0, "sigma1"), ("median", "median")):
        assert MEASURES[f"hsic_delta_w_{label}"](u, v) == float(hsic_delta_w(*u, *v, sigma))
        assert MEASURES[f"hsic_lora_a_{label}"](u, v) == float(hsic_lora_a(u[0], v[0], sigma))
    assert MEASURES["cka_rbf_delta_w"](u, v) == rbf_cka(u, v)
    wider = (torch.cat([v[0], v[0]]), torch.cat([v[1], v[1]], dim=1), v[2])  # rank 2R: a planted vector's shape
    assert math.isnan(MEASURES["hsic_lora_a_sigma1"](u, wider))
    assert not math.isnan(MEASURES["hsic_delta_w_sigma1"](u, wider))
