"""Points that are the same model in several methods are generated once (mva_core.shared_points)."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import REPO

from mva_core.config import validate_config
from mva_core.shared_points import borrowed_points, copied_rows, model_keys


def borrowed(config_file: str, **changes) -> dict[str, dict[str, str]]:
    config = yaml.safe_load((REPO / config_file).read_text())
    config.update(changes)
    return borrowed_points(validate_config(config))


def test_methods_that_differ_in_the_later_vector_share_only_the_points_of_the_earlier_one():
    shared = borrowed("config/decorrelation.yaml")
    assert shared["soup"] == {}  # the first method generates everything it has
    for method in ("mva", "cka10", "projection", "replicate", "planted", "proj_planted"):
        assert shared[method] == {"0_0": "soup", "1_0": "soup", "2_0": "soup"}, method


def test_the_default_shares_the_sft_point_and_concise_alone_and_modpo_only_the_sft_point():
    assert borrowed("config.yaml")["soup"] == {"0_0": "mva", "0.5_0": "mva", "1_0": "mva", "1.5_0": "mva"}
    smoke = borrowed("config/smoke.yaml")
    assert smoke["modpo"] == {"0_0": "mva"}  # its adapters are its own; the SFT point is the base policy
    assert smoke["single"]["0_1"] == "soup"  # soup's later vector is the independent one


def test_a_model_is_its_adapter_directories_and_nonzero_lambdas():
    lambdas = pd.DataFrame({"point_id": ["a", "b", "c", "d"], "lam_u": [1.0, 1.0, 0.0, 0.0], "lam_v": [0.0, 0.5, 0.0, 1e-3]})
    keys = model_keys({"u": "independent/u", "v": "mva/v"}, lambdas)
    assert keys == {"a": (("independent/u", 1.0),), "b": (("independent/u", 1.0), ("mva/v", 0.5)), "c": (),
                    "d": (("mva/v", 0.001),)}


def test_copied_rows_are_the_owners_rows_relabelled_and_a_missing_point_is_named():
    owner = pd.DataFrame({"point_id": ["0_0", "0_0", "1_0", "0_1"], "prompt_id": ["p", "q", "p", "p"],
                          "response": ["x", "y", "z", "w"], "method": "soup"})
    rows = copied_rows({"soup": owner}, {"0_0": "soup", "1_0": "soup"}, "mva")
    assert rows[["point_id", "prompt_id", "response"]].values.tolist() == [["0_0", "p", "x"], ["0_0", "q", "y"],
                                                                           ["1_0", "p", "z"]]
    assert set(rows["method"]) == {"mva"}
    with pytest.raises(ValueError, match=r"lack the points \['2_0'\]"):
        copied_rows({"soup": owner}, {"2_0": "soup"}, "mva")
    with pytest.raises(ValueError, match="no generations of soup"):
        copied_rows({}, {"0_0": "soup"}, "mva")
    assert copied_rows({}, {}, "soup").empty


def test_a_grid_too_large_to_build_at_plan_time_shares_nothing():
    lambdas = [round(0.01 * i, 2) for i in range(400)]  # 160,000 points for two values: above BUILT_GRID_LIMIT
    evaluation = yaml.safe_load((REPO / "config.yaml").read_text())["evaluation"]
    evaluation.update(grid={"type": "product", "lambdas": lambdas}, max_generations_per_seed=None)
    shared = borrowed("config.yaml", evaluation=evaluation)
    assert shared == {"mva": {}, "soup": {}}


def test_minus_zero_and_zero_are_one_point_id():
    from mva_core.grid import point_id

    assert point_id([-0.5 * 0.0, 1.0]) == point_id([0.0, 1.0]) == "0_1"
