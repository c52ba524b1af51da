"""Score tables as reward arrays, and mean-reward tables in the wide layout."""
import numpy as np
import pandas as pd
import pytest

from mva_core.contracts import ContractError
from mva_core.rewards import attach_points, reward_tensor, seeded_rewards, value_columns, wide_means

VALUES = ["harmless", "helpful"]


def long_scores(rewards: dict[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    """Long score table from {(method, point_id): array (n_values, n_prompts)} over VALUES."""
    rows = [
        (m, p, f"q{j}", v, float(arr[i, j]))
        for (m, p), arr in rewards.items()
        for i, v in enumerate(VALUES)
        for j in range(arr.shape[1])
    ]
    return pd.DataFrame(rows, columns=["method", "point_id", "prompt_id", "value", "reward"])


def test_reward_tensor_layout_is_sorted_by_key_value_and_prompt():
    rewards = {("m", "p1"): np.arange(6.0).reshape(2, 3), ("a", "p0"): -np.ones((2, 3))}
    tensor = reward_tensor(long_scores(rewards).sample(frac=1, random_state=0))
    assert list(tensor.keys) == [("a", "p0"), ("m", "p1")] and tensor.values == tuple(VALUES)
    np.testing.assert_array_equal(tensor.rewards[tensor.row("m", "p1")], rewards[("m", "p1")])
    np.testing.assert_array_equal(tensor.means()[1], [1.0, 4.0])
    with pytest.raises(KeyError, match="point_id='p9'"):
        tensor.row("m", "p9")


def test_reward_tensor_names_missing_and_duplicate_scores():
    scores = long_scores({("m", "p0"): np.zeros((2, 3)), ("m", "p1"): np.zeros((2, 3))})
    with pytest.raises(ValueError, match="point_id='p1'"):
        reward_tensor(scores.iloc[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        reward_tensor(pd.concat([scores, scores.iloc[:1]]))
    with pytest.raises(ValueError, match="non-finite"):
        reward_tensor(scores.assign(reward=np.where(scores.index == 2, np.inf, scores["reward"])))


def test_samples_are_averaged_within_their_prompt():
    first = long_scores({("m", "p0"): np.arange(6.0).reshape(2, 3)}).assign(sample=0)
    second = first.assign(sample=1, reward=first["reward"] + 10)
    tensor = reward_tensor(pd.concat([second, first]).sample(frac=1, random_state=1))
    np.testing.assert_array_equal(tensor.rewards[0], np.arange(6.0).reshape(2, 3) + 5)  # one entry per prompt
    seeded = seeded_rewards(pd.concat([first, second]).assign(seed=7))
    assert seeded.rewards.shape == (1, 1, 2, 3) and seeded.prompts == ("q0", "q1", "q2")
    with pytest.raises(ValueError, match="has 1 samples, others up to 2"):
        reward_tensor(pd.concat([first, second.iloc[1:]]))
    with pytest.raises(ValueError, match="duplicate"):
        reward_tensor(pd.concat([first, second, second.iloc[:1]]))


def test_reward_tensor_checks_columns_with_the_scores_contract():
    scores = long_scores({("m", "p0"): np.zeros((2, 3))})
    with pytest.raises(ContractError, match=r"scores table lacks columns \['prompt_id'\]"):
        reward_tensor(scores.drop(columns="prompt_id"))
    with pytest.raises(ContractError, match="column 'reward' of the scores table must hold numbers"):
        reward_tensor(scores.assign(reward="high"))


def test_wide_means_layout():
    means = pd.DataFrame({"method": ["m"] * 4, "point_id": ["p0", "p0", "p1", "p1"], "value": VALUES * 2,
                          "mean": [1.0, 1.0, 0.0, 0.0], "ci_low": 0.0, "ci_high": 2.0})
    wide = wide_means(means)
    assert list(wide.columns) == VALUES and wide.loc[("m", "p0"), "helpful"] == 1
    with_ci = wide_means(means, with_ci=True)
    assert "helpful_ci_low" in with_ci.columns and value_columns(with_ci) == VALUES
    with pytest.raises(ContractError, match=r"mean rewards table lacks columns \['ci_low', 'ci_high'\]"):
        wide_means(means.drop(columns=["ci_low", "ci_high"]), with_ci=True)


def test_attach_points_joins_kind_and_lambdas_and_names_a_missing_point():
    wide = pd.DataFrame({"helpful": [1.0, 2.0]},
                        index=pd.MultiIndex.from_tuples([("m", "p0"), ("m", "p1")], names=["method", "point_id"]))
    points = pd.DataFrame({"method": ["m", "m"], "point_id": ["p0", "p1"], "kind": ["sft", "grid"],
                           "lam_helpful": [0.0, 1.0]})
    table = attach_points(wide, points)
    assert table["kind"].tolist() == ["sft", "grid"] and table["lam_helpful"].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="'p1'"):
        attach_points(wide, points.iloc[:1])
