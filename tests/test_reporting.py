"""Seeds pooling, per-seed hypervolumes, the sensitivity table and the summary page."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mva_core.reporting import build_tables, hypervolume_by_seed, pool_seeds, sensitivity_table, summary_markdown

EVALUATION = {"bootstrap": 50, "ci": 0.95, "reference_point": [0.0, 0.0], "weightings": [[0.5, 0.5]],
              "win_rate_target": "mva", "tie_tolerance": 0.0}


def _points():
    rows = []
    for method in ["mva", "soup"]:
        rows += [{"method": method, "point_id": "0_0", "kind": "sft", "lam_a": 0.0, "lam_b": 0.0},
                 {"method": method, "point_id": "1_1", "kind": "grid", "lam_a": 1.0, "lam_b": 1.0}]
    return pd.DataFrame(rows)


def _scores(seeds=(1, 2), n_prompts=6):
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for method, level in [("mva", 2.0 + seed), ("soup", 1.0)]:
            for point, scale in [("0_0", 0.5), ("1_1", 1.0)]:
                for prompt in range(n_prompts):
                    for value in ["a", "b"]:
                        rows.append({"method": method, "point_id": point, "prompt_id": f"p{prompt}", "value": value,
                                     "seed": seed, "reward": level * scale + 0.01 * rng.normal()})
    return pd.DataFrame(rows)


def test_pooling_makes_seed_prompt_pairs_the_unit():
    pooled = pool_seeds(_scores())
    assert pooled["prompt_id"].nunique() == 12
    assert pooled["prompt_id"].iloc[0].startswith("s1/")


def test_hypervolume_by_seed_reports_each_seed_and_a_t_interval():
    table = hypervolume_by_seed(_scores(), _points(), EVALUATION, seed=0)
    per_seed = table[table["seed"] != "all"].set_index(["method", "seed"])["hypervolume"]
    assert per_seed[("mva", "1")] == pytest.approx(9.0, rel=0.02)  # (2+1)^2 against reference (0, 0)
    assert per_seed[("mva", "2")] == pytest.approx(16.0, rel=0.02)
    across = table[table["seed"] == "all"].set_index("method")
    assert across.loc["mva", "hypervolume"] == pytest.approx(12.5, rel=0.02)
    assert across.loc["mva", "ci_low"] < 9.0 and across.loc["mva", "ci_high"] > 16.0
    assert across.loc["mva", "n_seeds"] == 2


def test_sensitivity_puts_the_unpenalised_method_at_weight_zero_of_every_series():
    frontiers = pd.DataFrame({"method": ["soup", "w1", "w10", "w10_s2"], "hypervolume": [1.0, 2.0, 3.0, 4.0],
                              "hv_ci_low": [0.5] * 4, "hv_ci_high": [5.0] * 4})
    decor = {m: pd.DataFrame({"hsic_lora_a": [h], "hsic_delta_w": [0.0]}) for m, h in
             [("soup", 0.3), ("w1", 0.2), ("w10", 0.1), ("w10_s2", 0.05)]}
    methods = {"soup": {"penalty": {"kind": "none"}},
               "w1": {"penalty": {"kind": "hsic", "weight": 1.0, "form": "lora_a", "sigma": 1.0}},
               "w10": {"penalty": {"kind": "hsic", "weight": 10.0, "form": "lora_a", "sigma": 1.0}},
               "w10_s2": {"penalty": {"kind": "hsic", "weight": 10.0, "form": "lora_a", "sigma": 2.0}}}
    table = sensitivity_table(methods, frontiers, decor)
    series = table.groupby("series")["weight"].apply(sorted).to_dict()
    assert series == {"lora_a, sigma=1.0": [0.0, 1.0, 10.0], "lora_a, sigma=2.0": [0.0, 10.0]}


def test_summary_names_the_best_method_and_the_seed_interval():
    scores, points = _scores(), _points()
    tables = build_tables(pool_seeds(scores), points, EVALUATION, ["a", "b"], seed=0)
    text = summary_markdown("demo", tables, [{"value": "a", "accuracy": 0.7, "n": 10, "mean_margin": 0.1}], {}, 60.0,
                            hypervolume_by_seed(scores, points, EVALUATION, seed=0))
    assert "Largest hypervolume: **mva**" in text
    assert "across training seeds" in text and "1.0 min" in text
    assert "decorrelated value vectors give a better frontier" in text and "-> reproduced" in text
