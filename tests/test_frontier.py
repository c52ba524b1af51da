import itertools

import numpy as np
import pandas as pd
import pytest

from mva_core.frontier import (
    frontier_ids,
    frontier_table,
    hypervolume,
    mean_rewards,
    pareto_mask,
    reference_point,
    reward_tensor,
    to_markdown,
    wide_means,
)

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


def points_table(keys_kinds: dict[tuple[str, str], str]) -> pd.DataFrame:
    rows = [{"method": m, "point_id": p, "kind": k, "lam_harmless": 0.0, "lam_helpful": 0.0}
            for (m, p), k in keys_kinds.items()]
    return pd.DataFrame(rows)


def grid_hypervolume(points: np.ndarray) -> int:
    """Brute force for non-negative integer points, reference 0: count covered unit cells."""
    top = int(points.max()) if len(points) else 0
    cells = np.array(list(itertools.product(range(top), repeat=points.shape[1])))
    return int(((points[None, :, :] >= cells[:, None, :] + 1).all(-1).any(-1)).sum())


# --- Pareto filter ---------------------------------------------------------------------------------------

def test_pareto_mask_drops_dominated_points():
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 1.5]])
    assert pareto_mask(pts).tolist() == [True, True, True, False, False]


def test_pareto_mask_keeps_exact_duplicates_but_not_weakly_dominated():
    assert pareto_mask(np.array([[1, 1], [1, 1]])).tolist() == [True, True]
    assert pareto_mask(np.array([[1, 1], [1, 2], [1, 2]])).tolist() == [False, True, True]


def test_pareto_mask_rejects_nan():
    with pytest.raises(ValueError, match="non-finite"):
        pareto_mask(np.array([[1.0, np.nan]]))


# --- hypervolume -----------------------------------------------------------------------------------------

def test_hypervolume_2d_staircase():
    pts = np.array([[1, 3], [2, 2], [3, 1]])
    assert hypervolume(pts, [0, 0]) == pytest.approx(6)
    assert hypervolume(np.vstack([pts, [[1, 1], [2, 1.5]]]), [0, 0]) == pytest.approx(6)
    assert hypervolume(pts + 5, [5, 5]) == pytest.approx(6)


def test_hypervolume_points_not_above_reference_contribute_nothing():
    pts = np.array([[1, 3], [2, 2], [3, 1]])
    assert hypervolume(np.array([[-1, 5], [4, 0], [0.5, -2]]), [0, 0]) == 0
    assert hypervolume(np.vstack([pts, [[-1, 10], [10, 0]]]), [0, 0]) == pytest.approx(6)


def test_hypervolume_3d_unit_cubes_and_union():
    assert hypervolume(np.array([[1, 1, 1]]), [0, 0, 0]) == pytest.approx(1)
    assert hypervolume(np.array([[1, 1, 1], [2, 2, 2]]), [0, 0, 0]) == pytest.approx(8)
    # three 3x1x1 bars along each axis: 3*3 - 3*1 + 1 = 7
    assert hypervolume(np.array([[3, 1, 1], [1, 3, 1], [1, 1, 3]]), [0, 0, 0]) == pytest.approx(7)
    # 2x2x1 slab plus 1x1x3 column: 4 + 3 - 1 = 6
    assert hypervolume(np.array([[2, 2, 1], [1, 1, 3]]), [0, 0, 0]) == pytest.approx(6)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_matches_cell_count(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        pts = rng.integers(0, 5, size=(8, k)).astype(float)
        assert hypervolume(pts, np.zeros(k)) == pytest.approx(grid_hypervolume(pts))


def test_hypervolume_monotone_when_adding_points():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(30, 3))
    volumes = [hypervolume(pts[:i], [-2, -2, -2]) for i in range(1, 31)]
    assert np.all(np.diff(volumes) >= -1e-12)


def test_hypervolume_rejects_wrong_reference_length():
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.ones((2, 3)), [0, 0])


# --- scores, means, CIs ----------------------------------------------------------------------------------

def test_mean_rewards_constant_rewards_give_zero_width_ci():
    scores = long_scores({("m", "p0"): np.full((2, 7), 0.25), ("m", "p1"): np.full((2, 7), -1.5)})
    means = mean_rewards(scores, n_boot=200)
    assert len(means) == 4 and set(means["n_prompts"]) == {7}
    np.testing.assert_allclose(means["ci_low"], means["mean"])
    np.testing.assert_allclose(means["ci_high"], means["mean"])


def test_mean_rewards_mean_and_ci_cover_it():
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(2, 50))
    means = mean_rewards(long_scores({("m", "p0"): arr}), n_boot=500).set_index("value")
    for i, v in enumerate(VALUES):
        assert means.loc[v, "mean"] == pytest.approx(arr[i].mean())
        assert means.loc[v, "ci_low"] < arr[i].mean() < means.loc[v, "ci_high"]


def test_reward_tensor_names_missing_and_duplicate_scores():
    scores = long_scores({("m", "p0"): np.zeros((2, 3)), ("m", "p1"): np.zeros((2, 3))})
    with pytest.raises(ValueError, match="point_id='p1'"):
        reward_tensor(scores.iloc[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        reward_tensor(pd.concat([scores, scores.iloc[:1]]))


def test_wide_means_layout():
    scores = long_scores({("m", "p0"): np.ones((2, 3)), ("m", "p1"): np.zeros((2, 3))})
    means = mean_rewards(scores, n_boot=20)
    wide = wide_means(means)
    assert list(wide.columns) == VALUES and wide.loc[("m", "p0"), "helpful"] == 1
    assert "helpful_ci_low" in wide_means(means, with_ci=True).columns


def test_reference_point_modes():
    wide = pd.DataFrame(
        {"harmless": [0.0, 1.0, 3.0], "helpful": [2.0, 1.0, 0.0]},
        index=pd.MultiIndex.from_tuples([("sft", "s"), ("m", "a"), ("m", "b")], names=["method", "point_id"]),
    )
    points = points_table({("sft", "s"): "sft", ("m", "a"): "grid", ("m", "b"): "grid"})
    np.testing.assert_allclose(reference_point(wide, "sft", points), [0.0, 2.0])
    np.testing.assert_allclose(reference_point(wide, "min", margin=0.1), [-0.3, -0.2])
    np.testing.assert_allclose(reference_point(wide, [1, 2]), [1, 2])
    with pytest.raises(ValueError, match="one per value"):
        reference_point(wide, [1, 2, 3])
    with pytest.raises(ValueError, match="kind == 'sft'"):
        reference_point(wide, "sft", points.assign(kind="grid"))


# --- frontier table --------------------------------------------------------------------------------------

def synthetic_run(n_prompts: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SFT at 0; 'bad' trades off on a quarter circle of radius 1, 'good' on radius 2; plus a dominated point."""
    rng = np.random.default_rng(seed)

    def noise() -> np.ndarray:
        return rng.normal(scale=0.5, size=(2, n_prompts))

    rewards, kinds = {("sft", "sft"): noise()}, {("sft", "sft"): "sft"}
    for method, radius in [("bad", 1.0), ("good", 2.0)]:
        for i, angle in enumerate(np.linspace(0, np.pi / 2, 5)):
            centre = radius * np.array([np.cos(angle), np.sin(angle)])
            rewards[(method, f"g{i}")] = centre[:, None] + noise()
            kinds[(method, f"g{i}")] = "grid"
        rewards[(method, "dominated")] = np.full((2, 1), 0.1) + noise()
        kinds[(method, "dominated")] = "grid"
    return long_scores(rewards), points_table(kinds)


def test_frontier_table_dominant_method_has_larger_hypervolume():
    scores, points = synthetic_run()
    table = frontier_table(scores, points, reference=[-0.5, -0.5], n_boot=200, seed=0).set_index("method")
    good, bad = table.loc["good"], table.loc["bad"]
    assert good.hypervolume > bad.hypervolume
    assert good.hv_ci_low > bad.hv_ci_high
    assert good.hv_ci_low <= good.hypervolume <= good.hv_ci_high
    assert "dominated" not in good.frontier_ids and len(good.frontier_ids) == good.n_frontier
    assert table.loc["sft", "n_points"] == 1 and table.loc["good", "ref_helpful"] == -0.5
    assert frontier_ids(table.reset_index())["good"] == list(good.frontier_ids)


def test_frontier_table_sft_reference_and_seed_determinism():
    scores, points = synthetic_run(n_prompts=30)
    first = frontier_table(scores, points, reference="sft", n_boot=50, seed=3)
    second = frontier_table(scores.sample(frac=1, random_state=1), points, reference="sft", n_boot=50, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert first.set_index("method").loc["sft", "hypervolume"] == 0


def test_frontier_table_requires_points_for_every_scored_point():
    scores, points = synthetic_run(n_prompts=10)
    with pytest.raises(ValueError, match="missing from the points table"):
        frontier_table(scores, points.iloc[1:], n_boot=5)


def test_to_markdown_pipe_table():
    df = pd.DataFrame({"method": ["a|b", "c"], "hv": [1.23456, 2.0], "ids": [["p1", "p2"], []]})
    lines = to_markdown(df).splitlines()
    assert lines[0] == "| method | hv | ids |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| a\\|b | 1.235 | p1, p2 |"
    assert len(lines) == 4
