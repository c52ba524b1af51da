"""Projection and planted vectors (mva_core.derived_vectors) on tiny random LoRA adapters: the projected side keeps
no overlap with the earlier vectors, an orthogonal vector is left alone, the planted vector is ΔW_rep − c·ΔW_u
exactly (for PEFT too), and projecting the planted vector gives the projection of the replicate, on every side."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel
from synthetic import save_random_adapter

from mva_core.adapters import read_value_vector
from mva_core.artifacts import provenance_scope, read_provenance, verify_artifact
from mva_core.decorrelation import decorrelation_table
from mva_core.dependence import column_overlap, row_overlap
from mva_core.derived_vectors import SIDES, orthonormal_basis, write_planted, write_projection
from mva_core.training.records import read_metadata

C = 0.7
TOLERANCE = 1e-6


def lora(r: int, modules: list[str], **options) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=modules, **options)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory, tiny_llama):
    """Earlier vectors ``u`` (r 4, and rsLoRA on some modules only) and ``w`` (r 2), and two vectors of the later
    value: ``rep`` (r 4, the replicate) and ``other`` (r 3, with a module no earlier vector has)."""
    root = tmp_path_factory.mktemp("derived")
    configs = {"u": lora(4, ["q_proj", "v_proj", "down_proj"]),
               "w": lora(2, ["q_proj", "k_proj", "v_proj"], use_rslora=True),
               "rep": lora(4, ["q_proj", "v_proj", "down_proj"]),
               "other": lora(3, ["q_proj", "v_proj", "o_proj"])}
    return {name: save_random_adapter(tiny_llama, config, root / name, seed=10 + i)
            for i, (name, config) in enumerate(configs.items())}


def delta_w(folder) -> dict[str, torch.Tensor]:
    """ΔW = s·B·A (fp64) of every module of a saved adapter."""
    return {module: scaling * b.double() @ a.double() for module, (a, b, scaling) in read_value_vector(folder).items()}


def assert_same_delta(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    modules = set(got) | set(expected)
    for module in modules:
        zero = torch.zeros_like(got[module] if module in got else expected[module])
        torch.testing.assert_close(got.get(module, zero), expected.get(module, zero), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("sides", SIDES)
def test_projection_leaves_no_overlap_on_the_projected_side(vectors, tmp_path, sides):
    """One QR of both earlier vectors together: each module's projected factor overlaps neither (< 1e-6), the
    factor of the other side is untouched, and a module no earlier vector has is kept."""
    out = write_projection(vectors["other"], {"u": vectors["u"], "w": vectors["w"]}, tmp_path / "p", sides)
    projected, original = read_value_vector(out), read_value_vector(vectors["other"])
    earlier = [read_value_vector(vectors[name]) for name in ("u", "w")]
    checked = 0
    for module, (a, b, scaling) in projected.items():
        a_0, b_0, s_0 = original[module]
        assert scaling == 1.0 and a.shape == a_0.shape and b.shape == b_0.shape  # a LoRA of the same rank
        for u in earlier:
            if module not in u:
                continue
            checked += 1
            if sides in ("columns", "both"):
                assert column_overlap(u[module], (a, b, 1.0)) < TOLERANCE
            if sides in ("rows", "both"):
                assert row_overlap(u[module], (a, b, 1.0)) < TOLERANCE
        if sides == "columns" or not any(module in u for u in earlier):
            torch.testing.assert_close(a, a_0, atol=TOLERANCE, rtol=0)
        if sides == "rows" or not any(module in u for u in earlier):
            torch.testing.assert_close(b, s_0 * b_0, atol=TOLERANCE, rtol=0)
    assert checked == 8 and set(projected) == set(original)  # 2 layers x (q, v) x (u, w); o_proj: kept
    assert column_overlap(earlier[0]["model.layers.0.self_attn.q_proj"],
                          original["model.layers.0.self_attn.q_proj"]) > 0.01  # there was overlap to remove


@pytest.mark.parametrize("sides", SIDES)
def test_a_vector_already_orthogonal_to_the_earlier_ones_is_unchanged(vectors, tmp_path, sides):
    earlier = {"u": vectors["u"], "w": vectors["w"]}
    orthogonal = write_projection(vectors["rep"], earlier, tmp_path / "once", "both")
    again = write_projection(orthogonal, earlier, tmp_path / "twice", sides)
    assert_same_delta(delta_w(again), delta_w(orthogonal))
    assert delta_w(orthogonal) != {} and not torch.allclose(
        delta_w(orthogonal)["model.layers.0.self_attn.q_proj"], delta_w(vectors["rep"])["model.layers.0.self_attn.q_proj"])


def test_planted_vector_is_the_replicate_minus_c_times_the_earlier_vectors_exactly(vectors, tmp_path, tiny_llama):
    """ΔW_rep − c·(ΔW_u + ΔW_w) on every module either targets (rank 4 + 4 + 2 with scaling 1), read back by our
    reader and by PEFT's own merge (scaling = lora_alpha / r)."""
    earlier = {"u": vectors["u"], "w": vectors["w"]}
    planted = write_planted(vectors["rep"], earlier, tmp_path / "planted", C)
    rep, u, w = (delta_w(vectors[name]) for name in ("rep", "u", "w"))
    expected = {module: rep.get(module, 0) - C * (u.get(module, 0) + w.get(module, 0))
                for module in set(rep) | set(u) | set(w)}
    assert_same_delta(delta_w(planted), expected)
    config = json.loads((planted / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 10 and not config["use_rslora"]

    merged = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), str(planted)).merge_and_unload().state_dict()
    base = tiny_llama.state_dict()
    for module, change in expected.items():
        name = f"{module}.weight"
        torch.testing.assert_close((merged[name] - base[name]).double(), change, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("sides", SIDES)
def test_projecting_the_planted_vector_gives_the_projection_of_the_replicate(vectors, tmp_path, sides):
    """Every side: the planted term's B columns lie in span(Q) and its A rows in span(P), so the projection removes
    it exactly (also on modules only the earlier vectors have, where both projections are 0)."""
    earlier = {"u": vectors["u"], "w": vectors["w"]}
    planted = write_planted(vectors["rep"], earlier, tmp_path / "planted", C)
    of_planted = write_projection(planted, earlier, tmp_path / "of_planted", sides)
    of_replicate = write_projection(vectors["rep"], earlier, tmp_path / "of_replicate", sides)
    assert_same_delta(delta_w(of_planted), delta_w(of_replicate))
    difference = delta_w(planted)["model.layers.0.self_attn.q_proj"] - delta_w(vectors["rep"])["model.layers.0.self_attn.q_proj"]
    assert difference.norm() > 0.1  # the planted term was there


def test_derived_vectors_carry_metadata_provenance_and_checksums(vectors, tmp_path):
    (vectors["rep"] / "metadata.json").write_text(json.dumps({"stage": "value_vector", "start_model_dir": "models/sft"}))
    try:
        with provenance_scope({"rule": "project_value_vector"}):
            out = write_projection(vectors["rep"], {"u": vectors["u"]}, tmp_path / "p", "columns")
    finally:
        (vectors["rep"] / "metadata.json").unlink()
    verify_artifact(out)
    metadata = read_metadata(out)
    assert metadata["stage"] == "projection" and metadata["settings"] == {"projection": {"sides": "columns"}}
    assert metadata["start_model_dir"] == "models/sft"  # where export finds the policy
    assert metadata["earlier_vectors"] == {"u": str(vectors["u"])} and metadata["source"] == str(vectors["rep"])
    assert metadata["delta_w_norms"]["total"] > 0 and read_provenance(out) == {"rule": "project_value_vector"}
    (out / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(Exception, match="corrupt"):
        verify_artifact(out)


def test_bad_arguments_name_the_culprit(vectors, tmp_path):
    with pytest.raises(ValueError, match="sides 'diagonal' is not one of"):
        write_projection(vectors["rep"], {"u": vectors["u"]}, tmp_path / "p", "diagonal")
    with pytest.raises(ValueError, match="c must be a finite number > 0, got -1"):
        write_planted(vectors["rep"], {"u": vectors["u"]}, tmp_path / "q", -1.0)
    with pytest.raises(ValueError, match="no earlier value vectors"):
        write_projection(vectors["rep"], {}, tmp_path / "r", "rows")
    assert not any(tmp_path.iterdir())  # nothing written


def test_basis_spans_the_column_space_at_its_numerical_rank():
    generator = torch.Generator().manual_seed(0)
    low_rank = torch.randn(20, 3, generator=generator, dtype=torch.float64) @ torch.randn(3, 6, generator=generator,
                                                                                          dtype=torch.float64)
    q = orthonormal_basis(low_rank)
    assert q.shape == (20, 3)
    torch.testing.assert_close(q.T @ q, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(q @ (q.T @ low_rank), low_rank)
    assert orthonormal_basis(torch.zeros(5, 2)).shape == (5, 0)


def test_decorrelation_table_measures_a_planted_vector_of_another_rank(vectors, tmp_path):
    """The released code's HSIC pairs A rows by index, which a rank-8 planted vector and a rank-4 earlier one do not
    allow: NaN ('undefined'), while the measures on ΔW rows and spaces are computed."""
    planted = write_planted(vectors["rep"], {"u": vectors["u"]}, tmp_path / "planted", C)
    table = decorrelation_table({"u": vectors["u"], "planted": planted}, draws=3)
    assert len(table) == 6 and table["hsic_lora_a_sigma1"].isna().all()
    assert (table["hsic_lora_a_median_reading"] == "undefined").all() and not table["hsic_lora_a_sigma1_discriminates"].any()
    assert table[["hsic_delta_w_median", "cka_linear_delta_w", "row_overlap"]].notna().all().all()
    assert (table["column_overlap"] > 0.3).all()  # the planted term shares u's column space
