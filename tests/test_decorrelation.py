"""Decorrelation diagnostics read from saved adapters."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig
from synthetic import save_random_adapter

from mva_core.adapters import read_value_vector
from mva_core.decorrelation import decorrelation_table, summarize_decorrelation, table_columns


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_llama):
    """Random LoRA vectors of the shared tiny model on q and v: helpful (r 4, α 8), harmless (rsLoRA r 4, α 16)."""
    root = tmp_path_factory.mktemp("adapters")
    helpful = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    harmless = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], use_rslora=True)
    return {"helpful": save_random_adapter(tiny_llama, helpful, root / "helpful", seed=1),
            "harmless": save_random_adapter(tiny_llama, harmless, root / "harmless", seed=2)}


def materialised(adapter_dir, module):
    A, B, s = read_value_vector(adapter_dir)[module]
    return A.double(), s * B.double() @ A.double()  # fp64 reference kernels (entries are close to 1 at sigma 3)


def rbf(X: torch.Tensor, sigma: float | str) -> torch.Tensor:
    """fp64 RBF kernel; ``"median"``: 2σ² = the (lower) median squared distance over pairs i < j."""
    d = torch.cdist(X, X) ** 2
    i, j = torch.triu_indices(len(X), len(X), offset=1)
    two_sigma_sq = d[i, j].median() if sigma == "median" else 2 * sigma**2
    return torch.exp(-d / two_sigma_sq)


def hsic64(K: torch.Tensor, L: torch.Tensor) -> float:
    """tr(K H L H) / n^2 in fp64 (kernel entries here can be close to 1: fp32 would keep ~3 digits)."""
    n = K.shape[0]
    H = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return float(torch.trace(K.double() @ H @ L.double() @ H) / n**2)


def test_read_adapter(adapters):
    helpful = read_value_vector(adapters["helpful"])
    assert sorted(helpful) == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    A, B, scaling = helpful["model.layers.0.self_attn.q_proj"]
    assert A.shape == (4, 64) and B.shape == (64, 4) and scaling == 2.0
    assert read_value_vector(adapters["harmless"])["model.layers.0.self_attn.q_proj"][2] == 16 / math.sqrt(4)  # rsLoRA
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        read_value_vector(adapters["helpful"].parent)


def test_table_has_every_estimator_and_matches_materialised_delta_w(adapters):
    table = decorrelation_table(adapters)
    assert list(table.columns) == table_columns()
    for measure in ["hsic_lora_a_sigma1", "hsic_lora_a_median", "hsic_delta_w_sigma1", "hsic_delta_w_median",
                    "cosine_delta_w", "cka_linear_delta_w", "cka_rbf_delta_w", "row_overlap", "column_overlap"]:
        assert {measure, f"{measure}_self", f"{measure}_indep_lo", f"{measure}_indep_hi"} <= set(table.columns)
        assert (table[f"{measure}_indep_lo"] <= table[f"{measure}_indep_hi"]).all()
    assert {"norm_a", "norm_b", "hsic_lora_a_sigma1_unsaturated", "hsic_lora_a_sigma1_kernel_std"} <= set(table.columns)
    assert len(table) == 4 and set(table["value_a"]) == {"helpful"} and set(table["value_b"]) == {"harmless"}
    for row in table.itertuples():
        A_u, dW_u = materialised(adapters["helpful"], row.module)
        A_v, dW_v = materialised(adapters["harmless"], row.module)
        for name, sigma in (("sigma1", 1.0), ("median", "median")):
            expected_dw = hsic64(rbf(dW_u, sigma), rbf(dW_v, sigma))
            expected_a = hsic64(rbf(A_u, sigma), rbf(A_v, sigma))
            assert getattr(row, f"hsic_delta_w_{name}") == pytest.approx(expected_dw, rel=1e-3, abs=1e-8)
            assert getattr(row, f"hsic_lora_a_{name}") == pytest.approx(expected_a, rel=1e-3, abs=1e-8)
        expected_cosine = torch.nn.functional.cosine_similarity(dW_u.flatten(), dW_v.flatten(), dim=0)
        assert row.cosine_delta_w == pytest.approx(float(expected_cosine), abs=1e-9)
    assert table["hsic_delta_w_median"].gt(0).all()


def test_cosine_with_itself_is_one_and_summary(adapters):
    table = decorrelation_table({"a": adapters["helpful"], "b": adapters["helpful"], "c": adapters["harmless"]})
    same = table[(table.value_a == "a") & (table.value_b == "b")]
    assert same["cosine_delta_w"].to_numpy() == pytest.approx(1.0, abs=1e-12)
    summary = summarize_decorrelation(table)
    assert list(summary[["value_a", "value_b"]].itertuples(index=False, name=None)) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    assert summary["n_modules"].tolist() == [4, 4, 4]
    assert summary.loc[0, "hsic_delta_w_median"] == pytest.approx(same["hsic_delta_w_median"].mean())


def test_table_needs_two_adapters(adapters):
    with pytest.raises(ValueError, match="at least two"):
        decorrelation_table({"helpful": adapters["helpful"]})
