"""λ grids always hold the SFT and single-vector references; evaluation prompts are distinct and per value."""
from __future__ import annotations

import pandas as pd
import pytest

from mva_core.data import evaluation_prompts
from mva_core.grid import GridSettings, grid_points, point_id


def test_product_grid_adds_references_once():
    points = grid_points(GridSettings(type="product", lambdas=(0.0, 0.5, 1.0, 1.5)), ["helpful", "harmless"])
    assert len(points) == 16  # (0,0), (1,0), (0,1) are in the product: kept once with their reference kind
    kinds = dict(zip(points["point_id"], points["kind"]))
    assert kinds["0_0"] == "sft" and kinds["1_0"] == "single" and kinds["0_1"] == "single"
    assert kinds["1.5_1.5"] == "grid"
    assert list(points.columns) == ["point_id", "kind", "lam_helpful", "lam_harmless"]


def test_list_grid_allows_extrapolation_and_keeps_order_of_values():
    points = grid_points(GridSettings(type="list", points=((-0.5, 2.0),)), ["a", "b"])
    row = points[points["kind"] == "grid"].iloc[0]
    assert (row["lam_a"], row["lam_b"], row["point_id"]) == (-0.5, 2.0, "-0.5_2")
    assert set(points["kind"]) == {"sft", "single", "grid"}


@pytest.mark.parametrize("kind", ["simplex", "box"])
def test_sampled_grids_are_seeded(kind):
    settings = GridSettings(type=kind, n_points=5, low=-1.0, high=2.0)
    first = grid_points(settings, ["a", "b", "c"], seed=3)
    assert first.equals(grid_points(settings, ["a", "b", "c"], seed=3))
    grid = first[first["kind"] == "grid"][["lam_a", "lam_b", "lam_c"]]
    assert len(grid) == 5
    if kind == "simplex":
        assert grid.sum(axis=1).round(3).eq(1.0).all()
    else:
        assert grid.min().min() >= -1.0 and grid.max().max() <= 2.0


def test_point_ids_are_readable():
    assert point_id([0.5, 1.0, -2.0]) == "0.5_1_-2"


def _split(questions):
    return pd.DataFrame({"prompt": [[{"role": "user", "content": q}] for q in questions]})


def test_evaluation_prompts_take_distinct_prompts_per_value():
    prompts = evaluation_prompts({"a": _split(["x", "x", "y", "z"]), "b": _split(["y", "w", "v"])}, per_value=2)
    assert prompts["origin"].tolist() == ["a", "a", "b", "b"]
    assert prompts["prompt_id"].is_unique
    assert [p[0]["content"] for p in prompts["prompt"]] == ["x", "y", "w", "v"]


def test_evaluation_prompts_name_the_value_that_runs_short():
    with pytest.raises(ValueError, match="value 'b'.*prompts_per_value"):
        evaluation_prompts({"a": _split(["x", "y"]), "b": _split(["x"])}, per_value=1)


def test_max_words_skips_long_prompts_and_names_the_setting():
    long = "word " * 30
    prompts = evaluation_prompts({"a": _split([long, "short one", "short two"])}, per_value=2, max_words=10)
    assert len(prompts) == 2 and all(len(m[0]["content"].split()) <= 10 for m in prompts["prompt"])
    with pytest.raises(ValueError, match="of at most 10 words.*evaluation.max_prompt_words"):
        evaluation_prompts({"a": _split([long, "short"])}, per_value=2, max_words=10)
