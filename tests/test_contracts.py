"""Artifact contracts: one validator for every per-stage table, on write and on read, naming file and column."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from mva_core.contracts import (
    COMPARISONS,
    EFFICACY,
    EVALUATION_PROMPTS,
    HYPERVOLUMES,
    INTERFERENCE,
    PAIRS,
    POINTS,
    SCORES,
    TRAINING_PAIRS,
    ContractError,
    read_table,
    validate_table,
    write_table,
)


def pairs() -> pd.DataFrame:
    return pd.DataFrame({
        "pair_id": ["a", "b"],
        "prompt": [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]],
        "chosen": ["yes", "sure"],
        "rejected": ["no", "never"],
        "source": ["file.jsonl", "file.jsonl"],
    })


def test_valid_tables_pass_and_survive_a_parquet_round_trip(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_table(pairs(), path, PAIRS)
    assert read_table(path, PAIRS)["pair_id"].tolist() == ["a", "b"]  # prompt cells come back as numpy arrays
    prompts = pd.DataFrame({"prompt_id": ["p1", "p2"], "prompt": pairs()["prompt"], "origin": ["helpful", "set"],
                            "category": [None, "crime"]})
    write_table(prompts, tmp_path / "prompts.parquet", EVALUATION_PROMPTS)
    read_table(tmp_path / "prompts.parquet", EVALUATION_PROMPTS)
    validate_table(pairs().drop(columns="source"), TRAINING_PAIRS)  # readers check only what they use


def test_a_missing_column_is_named_with_the_file(tmp_path):
    path = tmp_path / "eval.parquet"
    pairs().drop(columns="rejected").to_parquet(path)
    with pytest.raises(ContractError, match=rf"{re.escape(str(path))}: preference pairs table lacks columns \['rejected'\]"):
        read_table(path, PAIRS)
    with pytest.raises(ContractError, match=r"^preference pairs table lacks columns \['source'\]"):
        validate_table(pairs().drop(columns="source"), PAIRS)
    points = pd.DataFrame({"point_id": ["0_0"], "kind": ["sft"], "method": ["mva"]})
    with pytest.raises(ContractError, match=r"lacks columns \['lam_\*'\]"):
        validate_table(points, POINTS)


def test_a_wrong_dtype_is_named_with_the_file_and_column(tmp_path):
    scores = pd.DataFrame({"point_id": ["p"], "prompt_id": ["q"], "method": ["mva"], "value": ["helpful"],
                           "reward": ["0.5"], "seed": [1], "rm_batch_size": [8], "rm_dtype": ["float32"]})
    path = tmp_path / "scores_helpful.parquet"
    with pytest.raises(ContractError, match=rf"{re.escape(str(path))}: column 'reward' of the scores table must hold numbers, "
                                            r"but its dtype is str"):
        write_table(scores, path, SCORES)
    assert not path.exists()  # nothing is written
    with pytest.raises(ContractError, match=r"column 'prompt' .* chat messages .* index 1 holds str 'q2'"):
        validate_table(pairs().assign(prompt=[pairs()["prompt"][0], "q2"]), PAIRS)
    with pytest.raises(ContractError, match=r"column 'chosen' .* strings, but the row at index 0 is null"):
        validate_table(pairs().assign(chosen=[None, "x"]), PAIRS)
    with pytest.raises(ContractError, match=r"column 'lam_helpful' .* numbers"):
        validate_table(pd.DataFrame({"point_id": ["x"], "kind": ["grid"], "method": ["m"], "lam_helpful": ["1"]}), POINTS)


def test_selection_counts_per_seed_are_lists_of_integers(tmp_path):
    frontiers = pd.DataFrame({"method": ["mva"], "n_points": [16], "n_selected": [11], "n_selected_per_seed": [[11, 10]],
                              "n_hull_vertices": [15], "n_hull_reachable": [11], "hypervolume": [0.7],
                              "hv_ci_low": [0.5], "hv_ci_high": [0.9], "hypervolume_std": [0.75],
                              "hv_std_ci_low": [0.55], "hv_std_ci_high": [0.95], "hv_df": [2.4]})
    write_table(frontiers, tmp_path / "frontiers.parquet", HYPERVOLUMES)
    assert read_table(tmp_path / "frontiers.parquet", HYPERVOLUMES)["n_selected_per_seed"][0].tolist() == [11, 10]
    with pytest.raises(ContractError, match=r"'n_selected_per_seed' .* lists of integers, but the row at index 0 holds list"):
        validate_table(frontiers.assign(n_selected_per_seed=[[11.0, 10.5]]), HYPERVOLUMES)
    with pytest.raises(ContractError, match=r"lacks columns \['n_hull_reachable'\]"):
        validate_table(frontiers.drop(columns="n_hull_reachable"), HYPERVOLUMES)


def test_judged_tables_declare_resolution_p_value_and_holm_verdict():
    for contract in (COMPARISONS, EFFICACY, INTERFERENCE):
        assert {"df", "mde", "p_value", "family", "verdict_holm"} <= set(contract.column_names), contract.name
    row = {"method": "mva", "value": "a", "lambda": 1.0, "claim": "above SFT", "estimate": 0.5, "ci_low": 0.1, "ci_high": 0.9,
           "verdict": "supported", "spearman": None, "df": None, "mde": 0.3, "p_value": 0.01, "family": "efficacy: a",
           "verdict_holm": "supported"}
    validate_table(pd.DataFrame([row]), EFFICACY)  # df may be missing (a single prompt has no spread)
    with pytest.raises(ContractError, match=r"efficacy table lacks columns \['verdict_holm'\]"):
        validate_table(pd.DataFrame([row]).drop(columns="verdict_holm"), EFFICACY)
