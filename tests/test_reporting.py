"""From scores to tables and summary.md: held-out selection, frontiers, per-seed hypervolumes, sensitivity and
claims that come from the paired comparisons alone."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mva_core.decorrelation import MEASURES
from mva_core.reporting import build_tables, sensitivity_table
from mva_core.statistics import accuracy_check
from mva_core.summary import summary_markdown

EVALUATION = {"bootstrap": 200, "ci": 0.95, "reference_point": "sft", "weightings": [[0.5, 0.5]],
              "selection_weightings": None, "selection_fraction": 0.5, "interference_lambdas": [1.0],
              "win_rate_target": "good", "tie_tolerance": 0.0, "equivalence_margins": {"helpful": 0.5},
              "primary_rows": [{"table": "comparisons", "metric": "hypervolume"},
                               {"table": "comparisons", "metric": "mean_reward", "value": "helpful", "weighting": "all"}]}
VALUES = ["helpful", "harmless"]  # training order; tables sort values alphabetically


def synthetic_run(n_prompts: int = 40, seeds=(1, 2, 3), gap: float = 1.0, noise: float = 0.25):
    """SFT at 0; 'bad' trades off on a quarter circle of radius 1, 'good' on 1 + gap, each with a dominated point."""
    rng = np.random.default_rng(0)
    points, rows = [], []
    centres = {("good", "sft"): (0.0, 0.0), ("bad", "sft"): (0.0, 0.0)}
    for method, radius in [("bad", 1.0), ("good", 1.0 + gap)]:
        for i, angle in enumerate(np.linspace(0, np.pi / 2, 5)):
            centres[(method, f"g{i}")] = (radius * np.cos(angle), radius * np.sin(angle))
        centres[(method, "dominated")] = (0.1, 0.1)
    for (method, point), centre in centres.items():
        points.append({"method": method, "point_id": point, "kind": "sft" if point == "sft" else "grid",
                       "lam_helpful": 0.0, "lam_harmless": 0.0})
    sft_noise = rng.normal(scale=noise, size=(len(seeds), 2, n_prompts))
    for s, seed in enumerate(seeds):
        for (method, point), centre in centres.items():
            draw = sft_noise[s] if point == "sft" else rng.normal(scale=noise, size=(2, n_prompts))
            for v, value in enumerate(VALUES):
                for j in range(n_prompts):
                    rows.append({"method": method, "point_id": point, "prompt_id": f"q{j:03d}", "value": value,
                                 "seed": seed, "reward": centre[v] + draw[v, j]})
    prompts = pd.DataFrame({"prompt_id": [f"q{j:03d}" for j in range(n_prompts)], "origin": "helpful"})
    return pd.DataFrame(rows), pd.DataFrame(points), prompts


@pytest.fixture(scope="module")
def tables():
    return build_tables(*synthetic_run(), EVALUATION, VALUES, seed=0)


def test_design_and_means_use_disjoint_prompts(tables):
    design = tables.design.iloc[0]
    assert (design.n_prompts, design.n_selection_prompts, design.n_test_prompts, design.n_seeds) == (40, 20, 20, 3)
    assert design.seeds_resampled and design.n_weightings == 11
    assert json.loads(design.primary_rows) == EVALUATION["primary_rows"]  # echoed as configured before the run
    assert json.loads(design.equivalence_margins) == {"helpful": 0.5}
    means = tables.means.set_index(["method", "point_id", "value"])
    row = means.loc[("good", "g0", "helpful")]
    assert row.ci_low < row["mean"] < row.ci_high and row["mean"] != row.mean_selection


def test_frontiers_are_descriptive_and_hypervolumes_come_from_selected_points(tables):
    frontiers = tables.frontiers.set_index("method")
    assert "dominated" not in frontiers.loc["good", "frontier_ids"]
    assert frontiers.loc["good", "hypervolume"] > frontiers.loc["bad", "hypervolume"]
    assert 1 <= frontiers.loc["good", "n_selected"] <= 6
    assert len(frontiers.loc["good", "n_selected_per_seed"]) == 3  # one per training seed
    assert 1 <= frontiers.loc["good", "n_hull_reachable"] <= frontiers.loc["good", "n_hull_vertices"] <= 6
    scale = tables.design.iloc[0][["scale_harmless", "scale_helpful"]].to_numpy(dtype=float)
    assert frontiers.loc["good", "hypervolume"] == pytest.approx(frontiers.loc["good", "hypervolume_std"] * scale.prod())
    selections = tables.selections
    assert len(selections) == 3 * 11 * 2  # seeds x weightings x methods
    assert set(selections["seed"]) == {"1", "2", "3"}


def test_comparisons_support_a_real_difference_and_the_leader_is_named(tables):
    comparisons = tables.comparisons.set_index(["metric", "value", "weighting"])
    assert comparisons.loc[("hypervolume", "", ""), "verdict"] == "supported"
    assert comparisons.loc[("weighted_reward", "", "all"), "estimate"] > 0
    # the configured target against each other method, from the hypervolume family of the comparisons table
    assert tables.leader[["method_a", "method_b", "family", "verdict_holm"]].values.tolist() == [
        ["good", "bad", "comparisons: hypervolume", "supported"]]
    wins = tables.win_rates.set_index(["weighting", "value"])
    assert set(wins.index.get_level_values("weighting")) == {"helpful=0.5,harmless=0.5", "all"}


def test_every_method_is_compared_with_each_penalty_free_baseline():
    scores, points, prompts = synthetic_run(seeds=(1,))
    worse = scores[scores["method"] == "bad"].assign(method="worse", reward=lambda d: d["reward"] - 1.0)
    three = pd.concat([scores, worse], ignore_index=True)
    points = pd.concat([points, points[points["method"] == "bad"].assign(method="worse")], ignore_index=True)
    built = build_tables(three, points, prompts, EVALUATION, VALUES, seed=0, baselines=["bad"])
    rows = built.baseline_comparisons.set_index(["method_a", "method_b", "metric", "value"])
    assert set(rows.index.get_level_values("method_b")) == {"bad"}  # the target's own table only has good − x
    assert set(rows.index.get_level_values("method_a")) == {"good", "worse"}
    assert rows.loc[("good", "bad", "hypervolume", ""), "verdict"] == "supported"
    assert rows.loc[("worse", "bad", "mean_reward", "helpful"), "verdict"] == "contradicted"
    assert set(built.baseline_comparisons["weighting"]) == {"", "all"}  # headline rows only
    text = summary_markdown("three", built, [accuracy("helpful", 60), accuracy("harmless", 60)], {}, None, "good")
    assert "## Each method against the penalty-free baselines" in text and "| worse | bad | hypervolume |" in text
    assert build_tables(scores, points, prompts, EVALUATION, VALUES, seed=0).baseline_comparisons.empty


def test_seed_hypervolumes_describe_each_seed(tables):
    per_seed = tables.seed_hypervolumes
    assert set(per_seed["seed"]) == {"1", "2", "3", "all"}
    across = per_seed[per_seed["seed"] == "all"].set_index("method")
    assert across.loc["good", "n_seeds"] == 3 and across.loc["good", "ci_low"] < across.loc["good", "hypervolume"]


def test_explicit_reference_is_given_in_training_order():
    scores, points, prompts = synthetic_run(seeds=(1,))
    built = build_tables(scores, points, prompts, {**EVALUATION, "reference_point": [-1.0, -2.0]}, VALUES, seed=0)
    frontier = built.frontiers.iloc[0]
    assert (frontier.ref_helpful, frontier.ref_harmless) == (-1.0, -2.0)
    assert not built.design.iloc[0].seeds_resampled


def accuracy(value, correct):
    return {"value": value, **accuracy_check(correct, 64), "mean_margin": 0.1}


def test_summary_claims_come_from_comparisons_with_verdicts(tables):
    text = summary_markdown("demo", tables, [accuracy("helpful", 60), accuracy("harmless", 60)], {}, 60.0,
                            target="good")
    assert "good beats bad:" in text and "hypervolume (primary): +" in text and "-> **supported**" in text
    assert "Largest held-out hypervolume: **good**, ahead of every other method (Holm-adjusted): good − bad: +" in text
    assert "20 report it" in text and "prompts and training seeds" in text and "1.0 min" in text
    assert "not evidence" not in text
    assert "Values are weighted on standardised rewards" in text and "| n_selected_per_seed |" in text
    primary = text.split("## Primary claims")[1].split("##")[0]
    assert "- hypervolume: +" in primary and "- mean_reward (helpful) averaged over weightings: +" in primary
    assert "win_rate" not in primary and "Selectors: `" in primary


def test_inconclusive_claims_carry_their_mde():
    built = build_tables(*synthetic_run(gap=0.0), EVALUATION, VALUES, seed=0)  # two methods on the same frontier
    text = summary_markdown("tie", built, [accuracy("helpful", 60), accuracy("harmless", 60)], {}, None, "good")
    inconclusive = [line for line in text.splitlines() if "-> **inconclusive**" in line]
    assert inconclusive and all("mde " in line for line in inconclusive)  # each with its resolution


def test_primary_rows_and_holm_verdicts_are_in_every_judged_table(tables):
    for name in ("comparisons", "efficacy", "interference", "baseline_comparisons"):
        table = getattr(tables, name)
        if len(table):
            assert {"df", "mde", "p_value", "family", "verdict_holm", "primary"} <= set(table.columns), name
    comparisons = tables.comparisons.set_index(["metric", "value", "weighting"])
    assert comparisons["primary"].sum() == 2 and comparisons.loc[("hypervolume", "", ""), "primary"]
    assert comparisons.loc[("mean_reward", "helpful", "all"), "equivalence_margin"] == 0.5
    assert np.isnan(comparisons.loc[("mean_reward", "harmless", "all"), "equivalence_margin"])
    assert (comparisons["mde"] >= 0).all() and comparisons["p_value"].between(0, 1).all()


def test_summary_names_no_leader_without_a_paired_difference_and_flags_chance_evaluators():
    scores, points, prompts = synthetic_run(gap=0.0, seeds=(1,))
    null = build_tables(scores, points, prompts, EVALUATION, VALUES, seed=0)
    text = summary_markdown("null", null, [accuracy("helpful", 34), accuracy("harmless", 60)], {}, None,
                            target="good")
    assert "Largest held-out hypervolume" not in text
    assert "good is not shown to have the largest held-out hypervolume: good − bad: " in text
    assert "prompt sampling only" in text
    assert "Evaluators of ['helpful'] are not distinguishable from chance" in text
    assert "mean_reward (helpful) averaged over weightings" in text
    line = next(x for x in text.splitlines() if "mean_reward (helpful)" in x)
    assert line.endswith("(evaluator of helpful at chance: not evidence)")


def test_claims_resting_on_an_inverted_evaluator_are_marked():
    text = summary_markdown("inverted", build_tables(*synthetic_run(seeds=(1,)), EVALUATION, VALUES, seed=0),
                            [accuracy("helpful", 4), accuracy("harmless", 60)], {}, None, target="good")
    assert "Evaluators of ['helpful'] are worse than chance: they rank answers backwards" in text
    line = next(x for x in text.splitlines() if "mean_reward (helpful) averaged" in x and "primary" in x)
    assert line.endswith("(evaluator of helpful inverted: not evidence)")
    assert "not evidence" not in next(x for x in text.splitlines() if "mean_reward (harmless) averaged" in x)


def test_a_value_with_no_evaluator_check_on_record_is_not_evidence():
    text = summary_markdown("archived early", build_tables(*synthetic_run(seeds=(1,)), EVALUATION, VALUES, seed=0),
                            [accuracy("harmless", 60)], {}, None, target="good")
    assert "No evaluator check is on record for ['helpful']" in text
    line = next(x for x in text.splitlines() if "mean_reward (helpful) averaged" in x and "primary" in x)
    assert line.endswith("(evaluator of helpful unchecked: not evidence)")
    assert "not evidence" not in next(x for x in text.splitlines() if "mean_reward (harmless) averaged" in x)
    none = summary_markdown("none", build_tables(*synthetic_run(seeds=(1,)), EVALUATION, VALUES, seed=0), [], {},
                            None, target="good")
    assert "No evaluator check is on record for ['harmless', 'helpful']" in none and "|  |" not in none


def test_sensitivity_puts_the_unpenalised_method_at_weight_zero_of_every_series():
    frontiers = pd.DataFrame({"method": ["soup", "w1", "w10", "w10_s2"], "hypervolume": [1.0, 2.0, 3.0, 4.0],
                              "hv_ci_low": [0.5] * 4, "hv_ci_high": [5.0] * 4})
    metrics = {**{name: 0.2 for name in MEASURES}, "norm_b": 1.5}
    decor = {m: pd.DataFrame([{**metrics, "hsic_lora_a_sigma1": h}]) for m, h in
             [("soup", 0.3), ("w1", 0.2), ("w10", 0.1), ("w10_s2", 0.05), ("c1", 0.2)]}
    methods = {"soup": {"penalty": {"kind": "none"}},
               "w1": {"penalty": {"kind": "hsic", "weight": 1.0, "form": "lora_a", "sigma": 1.0}},
               "w10": {"penalty": {"kind": "hsic", "weight": 10.0, "form": "lora_a", "sigma": 1.0}},
               "w10_s2": {"penalty": {"kind": "hsic", "weight": 10.0, "form": "lora_a", "sigma": 2.0}},
               "c1": {"penalty": {"kind": "cka", "weight": 1.0}}}
    frontiers = pd.concat([frontiers, pd.DataFrame([{"method": "c1", "hypervolume": 2.5, "hv_ci_low": 0.5,
                                                     "hv_ci_high": 5.0}])])
    table = sensitivity_table(methods, frontiers, decor)
    series = table.groupby("series")["weight"].apply(sorted).to_dict()
    assert series == {"lora_a, sigma=1.0": [0.0, 1.0, 10.0], "lora_a, sigma=2.0": [0.0, 10.0], "cka": [0.0, 1.0]}
    assert set(metrics) <= set(table.columns)
