"""Verifiable values: oracle scorers on known inputs, the oracle pair builder, and the oracle evaluator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mva_core.data import SourceSpec, load_pairs
from mva_core.oracles import OracleDerivation, OracleScorer, derive_oracle_preference, oracle_scores
from mva_core.reward_models import RewardModelSettings, RewardScorer, pairwise_accuracy


def test_scorers_on_known_inputs():
    assert oracle_scores("conciseness", ["one two three", "", "a  b"]).tolist() == [-3.0, 0.0, -2.0]
    positivity = oracle_scores("positivity", ["I love this, it is wonderful!", "This is terrible and I hate it.",
                                              "The box is on the table."])
    assert positivity[0] > 0.5 and positivity[1] < -0.5 and positivity[2] == 0.0
    share = oracle_scores("positive_share", ["I love this, it is wonderful!", "This is terrible and I hate it.",
                                             "I love it. " + "The box is on the table. " * 5])
    assert share[0] > 0.5 and share[1] < -0.4 and 0 < share[2] < share[0]  # diluted by neutral words, not saturated
    inoffensive = oracle_scores("inoffensiveness", ["you are a stupid idiot", "have a lovely afternoon"])
    assert inoffensive[0] < 0.2 and inoffensive[1] > 0.8 and ((0 <= inoffensive) & (inoffensive <= 1)).all()
    with pytest.raises(ValueError, match="not one of"):
        oracle_scores("honesty", ["x"])


def pairs() -> pd.DataFrame:
    return pd.DataFrame({
        "pair_id": ["a", "b", "c", "d"],
        "prompt": [[{"role": "user", "content": "q"}]] * 4,
        "chosen": ["This is awful.", "I love it!", "Fine.", "Good, thanks."],
        "rejected": ["What a great day, I love it!", "It is bad.", "Fine.", "Good, thanks!"],
        "source": "s",
    })


def test_pair_builder_relabels_and_drops_ties_and_near_ties():
    kept, dropped = derive_oracle_preference(pairs(), OracleDerivation("positivity", margin=0.3))
    # c ties exactly, d differs by less than 0.3
    assert dropped == {"oracle_margin": 2, "length_confound": 0} and kept["pair_id"].tolist() == ["a", "b"]
    assert kept.loc[0, "chosen"] == "What a great day, I love it!"  # swapped: the oracle prefers it
    assert kept.loc[1, "chosen"] == "I love it!"  # kept as labelled
    scores = {t: oracle_scores("positivity", [t])[0] for t in pd.concat([kept["chosen"], kept["rejected"]])}
    assert all(scores[c] - scores[r] >= 0.3 for c, r in zip(kept["chosen"], kept["rejected"]))
    _, dropped_none = derive_oracle_preference(pairs(), OracleDerivation("positivity", margin=0.0))
    assert dropped_none["oracle_margin"] == 1  # only the exact tie
    with pytest.raises(ValueError, match="margin"):
        OracleDerivation("positivity", margin=-1.0)


def test_length_control_keeps_only_length_matched_pairs():
    kept, dropped = derive_oracle_preference(pairs(), OracleDerivation("positivity", margin=0.3, max_length_ratio=2.0))
    # a: the positive reply has 7 words against 3 (dropped); b: 3 words against 3 (kept)
    assert kept["pair_id"].tolist() == ["b"] and dropped == {"oracle_margin": 2, "length_confound": 1}
    loose, dropped = derive_oracle_preference(pairs(), OracleDerivation("positivity", margin=0.3, max_length_ratio=3.0))
    assert len(loose) == 2 and dropped["length_confound"] == 0
    short_positive = pairs().assign(chosen=["Great, I love it!"] * 4, rejected=["This is awful, I really hate it."] * 4)
    kept, dropped = derive_oracle_preference(short_positive, OracleDerivation("positivity", 0.3, max_length_ratio=1.5))
    assert kept.empty and dropped["length_confound"] == 4  # the shorter reply may not be the one chosen either
    assert OracleDerivation("positivity", 0.5, 1.25).label == "positivity>0.5,len<=1.25"
    with pytest.raises(ValueError, match="max_length_ratio"):
        OracleDerivation("positivity", max_length_ratio=0.5)


def test_source_derive_mapping_counts_drops(tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs().drop(columns=["pair_id", "source"]).assign(prompt="q").to_json(path, orient="records", lines=True)
    spec = SourceSpec(path=str(path), derive={"scorer": "positivity", "margin": 0.3})
    loaded = load_pairs(spec)
    drops = loaded.attrs["drops"]
    assert len(loaded) == 2 and drops["identical"] == 1 and drops["oracle_margin"] == 1  # the loader drops c first
    assert loaded["source"].iloc[0].endswith("#positivity>0.3")


def test_oracle_evaluator_scores_and_is_exact_on_its_own_pairs():
    settings = RewardModelSettings(source="oracle", scorer="conciseness")
    scorer = RewardScorer.load("oracle", settings)
    assert isinstance(scorer, OracleScorer) and scorer.name == "oracle:conciseness"
    assert scorer.score([[]] * 2, ["a b c", "a"]).tolist() == [-3.0, -1.0]
    kept, _ = derive_oracle_preference(pairs(), OracleDerivation("conciseness", margin=1))
    result = pairwise_accuracy(scorer, kept)
    assert result["accuracy"] == 1.0 and np.isfinite(result["ci_low"])
    with pytest.raises(ValueError, match="source 'oracle'"):
        RewardModelSettings(source="train", scorer="positivity")
