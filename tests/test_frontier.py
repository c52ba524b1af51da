import itertools

import numpy as np
import pytest

from mva_core.frontier import hypervolume, hypervolumes, pareto_mask, reference_from_means


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


def test_batched_hypervolumes_equal_the_exact_loop():
    rng = np.random.default_rng(0)
    for k in (2, 3):
        sets = rng.normal(size=(50, 6, k))
        expected = [hypervolume(part, np.full(k, -0.5)) for part in sets]
        np.testing.assert_allclose(hypervolumes(sets, np.full(k, -0.5)), expected, rtol=1e-12)


# --- reference point -------------------------------------------------------------------------------

def test_reference_modes_keep_leading_axes():
    means = np.array([[0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])  # points x values; the first is SFT
    is_sft = np.array([True, False, False])
    np.testing.assert_allclose(reference_from_means(means, "sft", is_sft), [0.0, 2.0])
    np.testing.assert_allclose(reference_from_means(means, "min", is_sft, margin=0.1), [-0.3, -0.2])
    resampled = np.stack([means, means + 1.0])  # two resamples: each gets its own reference
    np.testing.assert_allclose(reference_from_means(resampled, "sft", is_sft), [[0.0, 2.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match="kind == 'sft'"):
        reference_from_means(means, "sft", np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="'sft', 'min'"):
        reference_from_means(means, "max", is_sft)


def test_batched_hypervolumes_take_one_reference_per_set():
    rng = np.random.default_rng(1)
    for k in (2, 3):
        sets, refs = rng.normal(size=(20, 6, k)), rng.normal(size=(20, k)) - 1.0
        expected = [hypervolume(part, ref) for part, ref in zip(sets, refs)]
        np.testing.assert_allclose(hypervolumes(sets, refs), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="reference"):
        hypervolumes(np.ones((4, 2, 2)), np.zeros((3, 2)))
