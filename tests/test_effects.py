"""Efficacy and interference tables on synthetic scores with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mva_core.effects import EffectEstimator, efficacy_table, interference_table
from mva_core.reporting import build_tables
from mva_core.rewards import seeded_rewards

VALUES = ["u", "v"]  # training order
LAMS = [0.0, 0.5, 1.0]
MVA_DROP, SOUP_DROP = -0.2, -1.0  # what adding v's vector does to u's reward, per method


def true_reward(method: str, lam_u: float, lam_v: float, value: str) -> float:
    own, other = (lam_u, lam_v) if value == "u" else (lam_v, lam_u)
    drop = MVA_DROP if method == "mva" else SOUP_DROP
    return 2.0 * own + (drop * own * other if value == "u" else 0.0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(size=30)
    rows, points = [], []
    for method in ("mva", "soup"):
        for lam_u in LAMS:
            for lam_v in LAMS:
                pid = f"{lam_u:g}_{lam_v:g}"
                points.append({"method": method, "point_id": pid, "kind": "grid", "lam_u": lam_u, "lam_v": lam_v})
                for value in VALUES:
                    for j in range(30):
                        reward = true_reward(method, lam_u, lam_v, value) + prompt_effect[j] + 0.05 * rng.normal()
                        rows.append({"method": method, "point_id": pid, "prompt_id": f"q{j:02d}", "value": value,
                                     "reward": reward, "seed": 1})
    test = seeded_rewards(pd.DataFrame(rows))
    return EffectEstimator(test, 0.95), pd.DataFrame(points)


def test_efficacy_rows_estimates_and_monotone_lines(data):
    estimator, points = data
    table = efficacy_table(estimator, points, VALUES).set_index(["method", "value", "lambda"])
    assert len(table) == 2 * 2 * 2  # methods x values x (0.5, 1)
    assert table.loc[("soup", "u", 1.0), "estimate"] == pytest.approx(2.0, abs=0.05)
    assert table.loc[("soup", "u", 0.5), "estimate"] == pytest.approx(1.0, abs=0.05)
    assert (table["verdict"] == "supported").all() and (table["spearman"] == 1.0).all()
    assert (table["ci_low"] < table["estimate"]).all() and (table["n_prompts"] == 30).all()


def test_interference_rows_and_paired_difference_against_the_baseline(data):
    estimator, points = data
    table = interference_table(estimator, points, VALUES, baselines=["soup"])
    rows = table.set_index(["method", "value_u", "value_v"])
    assert rows.loc[("soup", "u", "v"), "estimate"] == pytest.approx(SOUP_DROP, abs=0.05)
    assert rows.loc[("soup", "u", "v"), "verdict"] == "supported"  # adding v lowers u
    assert rows.loc[("soup", "v", "u"), "estimate"] == pytest.approx(0.0, abs=0.05)
    diff = rows.loc[("mva − soup", "u", "v")]
    assert diff["estimate"] == pytest.approx(MVA_DROP - SOUP_DROP, abs=0.05) and diff["verdict"] == "supported"
    assert diff["claim"] == "mva interferes less than soup"
    assert len(table) == 2 * 2 + 2  # per method both ordered pairs, then mva − soup for both


def test_methods_without_lambda_lines_are_skipped(data):
    estimator, points = data
    modpo_like = points.assign(adapter=np.where(points["method"] == "mva", "w0", ""))
    assert set(efficacy_table(estimator, modpo_like, VALUES)["method"]) == {"soup"}


def shrunk_world(n_prompts: int, seed: int, prefix: str, lams: tuple[float, ...] = tuple(LAMS),
                 mva_strength: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MVA's v vector is soup's at half strength (own effect 1·λ_v vs 2·λ_v), and interference follows v's strength
    (−strength·λ_u·λ_v): less interference than soup at λ_v = 1, the same at equal efficacy (soup at λ_v = 0.5)."""
    rng = np.random.default_rng(seed)
    prompt_effect = rng.normal(size=n_prompts)
    rows, points = [], []
    for method, strength in (("mva", mva_strength), ("soup", 1.0)):
        for lam_u in lams:
            for lam_v in lams:
                pid = f"{lam_u:g}_{lam_v:g}"
                points.append({"method": method, "point_id": pid, "kind": "grid", "lam_u": lam_u, "lam_v": lam_v})
                means = {"u": 2.0 * lam_u - 1.0 * lam_u * strength * lam_v, "v": 2.0 * strength * lam_v}
                for value in VALUES:
                    for j in range(n_prompts):
                        rows.append({"method": method, "point_id": pid, "prompt_id": f"{prefix}{j:02d}", "value": value,
                                     "reward": means[value] + prompt_effect[j] + 0.05 * rng.normal(), "seed": 1})
    return pd.DataFrame(rows), pd.DataFrame(points)


def test_matched_efficacy_rows_separate_shrinking_from_decorrelating():
    test_scores, points = shrunk_world(30, 1, "t")
    selection_scores, _ = shrunk_world(30, 2, "s")
    estimator = EffectEstimator(seeded_rewards(test_scores), 0.95, selection=seeded_rewards(selection_scores))
    rows = interference_table(estimator, points, VALUES, baselines=["soup"], matched=estimator).set_index(
        ["method", "value_u", "value_v"])
    plain = rows.loc[("mva − soup", "u", "v")]
    assert plain["estimate"] == pytest.approx(0.5, abs=0.05) and plain["verdict"] == "supported"
    matched = rows.loc[("mva − soup @ λ_v = 0.5 (matched efficacy)", "u", "v")]
    assert matched["estimate"] == pytest.approx(0.0, abs=0.05) and matched["verdict"] == "inconclusive"
    assert matched["claim"] == "mva interferes less than soup at equal efficacy of v"
    assert matched["matched_gap"] == pytest.approx(0.0, abs=0.05) and np.isnan(plain["matched_gap"])
    assert not interference_table(estimator, points, VALUES, ["soup"])["method"].str.contains("matched").any()


def test_interference_under_extrapolation_matches_efficacy_at_its_own_level():
    lams = (0.0, 0.5, 1.0, 2.0)
    test_scores, points = shrunk_world(30, 1, "t", lams)
    selection_scores, _ = shrunk_world(30, 2, "s", lams)
    estimator = EffectEstimator(seeded_rewards(test_scores), 0.95, selection=seeded_rewards(selection_scores))
    table = interference_table(estimator, points, VALUES, ["soup"], lambdas=(1.0, 2.0), matched=estimator)
    rows = table.set_index(["method", "value_u", "value_v", "lambda"])
    assert rows.loc[("soup", "u", "v", 2.0), "estimate"] == pytest.approx(-4.0, abs=0.05)  # −λ_u·λ_v
    assert rows.loc[("mva − soup", "u", "v", 2.0), "estimate"] == pytest.approx(2.0, abs=0.05)
    # MVA's v efficacy at λ_v = 2 is soup's at 1: the matched row at λ = 2 compares with soup at (2, 1)
    matched = rows.loc[("mva − soup @ λ_v = 1 (matched efficacy)", "u", "v", 2.0)]
    assert matched["estimate"] == pytest.approx(0.0, abs=0.05) and matched["verdict"] == "inconclusive"
    assert rows.loc[("mva − soup @ λ_v = 0.5 (matched efficacy)", "u", "v", 1.0), "estimate"] == pytest.approx(
        0.0, abs=0.05)
    assert sorted(set(table["lambda"])) == [1.0, 2.0]


def test_negative_lambda_claims_below_sft():
    """An unseen config with λ = −0.5: the concise vector subtracted made answers 2.7 words longer, as it should; the
    efficacy table read that as `contradicted` (claim: above SFT whatever the sign of λ)."""
    rng = np.random.default_rng(3)
    words = 40 + 10 * rng.normal(size=30)  # the prompt sets the SFT answer's length
    extra = {-0.5: 2.7, 0.0: 0.0, 1.0: -6.0}  # words added at each λ of the concise vector
    rows = [{"method": "soup", "point_id": f"{lam:g}_0", "prompt_id": f"q{j:02d}", "value": value, "seed": 1,
             "reward": -(words[j] + extra[lam] + 2.0 * rng.normal()) if value == "concise" else 0.0}
            for lam in extra for value in ("concise", "positive") for j in range(30)]
    points = pd.DataFrame([{"method": "soup", "point_id": f"{lam:g}_0", "kind": "sft" if lam == 0 else "single",
                            "lam_concise": lam, "lam_positive": 0.0} for lam in extra])
    estimator = EffectEstimator(seeded_rewards(pd.DataFrame(rows)), 0.95)
    table = efficacy_table(estimator, points, ["concise", "positive"]).set_index("lambda")
    below = table.loc[-0.5]
    assert below["estimate"] == pytest.approx(-2.7, abs=1.0) and below["ci_high"] < 0
    assert below["verdict"] == "supported", below.to_dict()
    assert below["claim"] == "below SFT" and table.loc[1.0, "claim"] == "above SFT"
    assert table.loc[1.0, "verdict"] == "supported" and table.loc[1.0, "spearman"] == 1.0


def test_matched_efficacy_is_chosen_per_training_seed():
    """MVA's v vector is half of soup's in seed 1 and as strong as soup's in seed 2: each seed is matched with its
    own soup level, so the matched difference is 0 and the match leaves no efficacy gap."""
    def two_seeds(prefix: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        parts = [shrunk_world(30, seed + s, prefix, mva_strength=strength)
                 for s, strength in enumerate((0.5, 1.0))]
        scores = pd.concat([scores.assign(seed=s + 1) for s, (scores, _) in enumerate(parts)], ignore_index=True)
        return scores, parts[0][1]

    test_scores, points = two_seeds("t", 1)
    selection_scores, _ = two_seeds("s", 5)
    estimator = EffectEstimator(seeded_rewards(test_scores), 0.95, selection=seeded_rewards(selection_scores))
    table = interference_table(estimator, points, VALUES, ["soup"], matched=estimator)
    rows = table.set_index(["method", "value_u", "value_v"])
    matched = rows.loc[("mva − soup @ λ_v = 0.5/1 (matched efficacy)", "u", "v")]
    assert matched["estimate"] == pytest.approx(0.0, abs=0.05) and matched["matched_gap"] == pytest.approx(0.0, abs=0.05)
    assert rows.loc[("mva − soup", "u", "v"), "estimate"] == pytest.approx(0.25, abs=0.05)  # (0.5 + 0) / 2: unmatched


def test_rows_without_a_choice_use_every_evaluation_prompt():
    test_scores, points = shrunk_world(30, 1, "t")
    selection_scores, _ = shrunk_world(30, 2, "s")
    scores = pd.concat([test_scores, selection_scores], ignore_index=True)
    prompts = pd.DataFrame({"prompt_id": sorted(scores["prompt_id"].unique()), "origin": "u"})
    evaluation = {"bootstrap": 100, "ci": 0.95, "reference_point": "min", "weightings": [[0.5, 0.5]],
                  "selection_weightings": None, "selection_fraction": 0.5, "interference_lambdas": [1.0],
                  "win_rate_target": "mva", "tie_tolerance": 0.0}
    tables = build_tables(scores, points, prompts, evaluation, VALUES, seed=0, baselines=["soup"])
    assert (tables.efficacy["n_prompts"] == 60).all() and tables.design.iloc[0].n_test_prompts == 30
    interference = tables.interference.set_index("method")
    plain = interference.drop(index=[m for m in interference.index if "matched" in m])
    assert (plain["n_prompts"] == 60).all() and plain["matched_gap"].isna().all()
    matched = interference.loc["mva − soup @ λ_v = 0.5 (matched efficacy)"]
    assert matched["n_prompts"] == 30 and abs(matched["matched_gap"]) < 0.1
def test_rows_carry_resolution_families_and_equivalence_where_a_margin_is_declared(data):
    estimator, points = data
    with_margin = EffectEstimator(estimator.reported, 0.95, margins={"u": 0.2})
    table = interference_table(with_margin, points, VALUES, baselines=["soup"])
    rows = table.set_index(["method", "value_u", "value_v"])
    # adding u's vector leaves v's reward about alone (0 ± 0.03), but v has no margin here: never equivalent
    assert rows.loc[("mva", "v", "u"), "verdict"] == "inconclusive" and rows.loc[("mva", "v", "u"), "mde"] < 0.05
    assert np.isnan(rows.loc[("mva", "v", "u"), "p_equivalence"])
    assert rows.loc[("mva − soup", "u", "v"), "equivalence_margin"] == 0.2
    assert set(table["family"]) == {"interference: within each method", "interference: against soup"}
    assert (table["verdict_holm"] == table["verdict"]).all()  # clear effects survive the adjustment
    assert ((table["p_value"] < 0.05) == table["verdict"].isin(["supported", "contradicted"])).all()
    margin_v = interference_table(EffectEstimator(estimator.reported, 0.95, margins={"v": 0.2}), points, VALUES, ["soup"])
    rows_v = margin_v.set_index(["method", "value_u", "value_v"])
    assert rows_v.loc[("mva", "v", "u"), "verdict"] == "equivalent"  # 90% interval inside ±0.2
    # soup's +0.046 [0.020, 0.073] is inside the margin too, but an interval excluding 0 reads first
    assert rows_v.loc[("soup", "v", "u"), "p_equivalence"] < 0.05 and rows_v.loc[("soup", "v", "u"), "verdict"] == "contradicted"
    efficacy = efficacy_table(with_margin, points, VALUES)
    assert set(efficacy["family"]) == {"efficacy: u", "efficacy: v"} and (efficacy["df"] == 29).all()


CONTROL_DROPS = {"soup": -1.0, "replicate": -1.0, "planted": -2.0, "projection": -0.2, "proj_planted": -0.2}
"""Interference per method in the control world (issue 24): the replicate interferes like soup, the planted vector
twice as much, and projecting either removes most of it."""


def control_world(prefix: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    prompt_effect = rng.normal(size=30)
    rows, points = [], []
    for method, drop in CONTROL_DROPS.items():
        for lam_u in LAMS:
            for lam_v in LAMS:
                pid = f"{lam_u:g}_{lam_v:g}"
                points.append({"method": method, "point_id": pid, "kind": "grid", "lam_u": lam_u, "lam_v": lam_v})
                means = {"u": 2.0 * lam_u + drop * lam_u * lam_v, "v": 2.0 * lam_v}
                rows += [{"method": method, "point_id": pid, "prompt_id": f"{prefix}{j:02d}", "value": value, "seed": 1,
                          "reward": means[value] + prompt_effect[j] + 0.05 * rng.normal()}
                         for value in VALUES for j in range(30)]
    return pd.DataFrame(rows), pd.DataFrame(points)


def test_control_rows_read_null_for_the_replicate_and_supported_for_the_planted_vector_and_its_projection():
    """A synthetic run through reporting.build_tables: `replicate − soup` is not supported, `planted − soup` is, with
    the claim of more interference, and `proj_planted − planted` (its projection against it, from ``references``)
    is supported in the direction of less interference."""
    test_scores, points = control_world("t", 1)
    selection_scores, _ = control_world("s", 2)
    scores = pd.concat([test_scores, selection_scores], ignore_index=True)
    prompts = pd.DataFrame({"prompt_id": sorted(scores["prompt_id"].unique()), "origin": "u"})
    evaluation = {"bootstrap": 100, "ci": 0.95, "reference_point": "min", "weightings": [[0.5, 0.5]],
                  "selection_weightings": None, "selection_fraction": 0.5, "interference_lambdas": [1.0],
                  "win_rate_target": "projection", "tie_tolerance": 0.0, "equivalence_margins": {"u": 0.3}}
    references = {"planted": "replicate", "proj_planted": "planted"}
    tables = build_tables(scores, points, prompts, evaluation, VALUES, seed=0, baselines=["soup"],
                          references=references, planted=["planted"])
    rows = tables.interference[tables.interference["value_u"] == "u"].set_index("method")
    null = rows.loc["replicate − soup"]
    assert null["estimate"] == pytest.approx(0.0, abs=0.05) and null["verdict"] == "equivalent"
    planted = rows.loc["planted − soup"]
    assert planted["claim"] == "planted interferes more than soup" and planted["estimate"] == pytest.approx(-1.0, abs=0.05)
    assert planted["verdict"] == planted["verdict_holm"] == "supported"
    assert rows.loc["planted − replicate", "verdict"] == "supported"  # against the vectors it was planted in
    projected = rows.loc["proj_planted − planted"]
    assert projected["claim"] == "proj_planted interferes less than planted"
    assert projected["estimate"] == pytest.approx(1.8, abs=0.05) and projected["verdict"] == "supported"
    assert projected["family"] == "interference: against planted"
    assert rows.loc["projection − soup", "verdict"] == "supported"
    matched = rows.loc["planted − soup @ λ_v = 1 (matched efficacy)"]
    assert matched["claim"] == "planted interferes more than soup at equal efficacy of v" and matched["verdict"] == "supported"
    assert "proj_planted − planted @ λ_v = 1 (matched efficacy)" in rows.index
    assert not any(label.startswith("soup − ") for label in rows.index)  # soup is the baseline, never compared
    without = interference_table(EffectEstimator(seeded_rewards(test_scores), 0.95), points, VALUES, ["soup"])
    assert "proj_planted − planted" not in set(without["method"])  # only with references
