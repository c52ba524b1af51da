import numpy as np
import pandas as pd
import pytest

from mva_core.frontier import mean_rewards, wide_means
from mva_core.winrate import select_points, win_rates


def wide_table(rows: dict[tuple[str, str], tuple[float, float]]) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples(list(rows), names=["method", "point_id"])
    return pd.DataFrame(list(rows.values()), index=index, columns=["harmless", "helpful"])


def points_for(keys) -> pd.DataFrame:
    return pd.DataFrame(
        [{"method": m, "point_id": p, "kind": "grid", "lam_harmless": i / 10, "lam_helpful": 1.0}
         for i, (m, p) in enumerate(keys)]
    )


def test_select_points_per_weighting():
    wide = wide_table({
        ("mva", "a"): (1.0, 0.0),
        ("mva", "b"): (0.0, 1.0),
        ("mva", "c"): (0.6, 0.6),
        ("ind", "x"): (0.5, 0.5),
        ("ind", "w"): (0.5, 0.5),  # tie with x at every weighting: smallest id wins
    })
    weightings = [{"harmless": 1.0}, {"helpful": 1.0}, {"harmless": 0.5, "helpful": 0.5}]
    sel = select_points(wide, points_for(wide.index), weightings)
    chosen = sel.set_index(["weighting", "method"])["point_id"]
    assert chosen[("harmless=1", "mva")] == "a"
    assert chosen[("helpful=1", "mva")] == "b"
    assert chosen[("harmless=0.5,helpful=0.5", "mva")] == "c"
    assert set(chosen.xs("ind", level="method")) == {"w"}
    first = sel.set_index(["weighting", "method"]).loc[("harmless=1", "mva")]
    assert first.w_helpful == 0 and first.score == 1.0
    assert {"kind", "lam_harmless", "lam_helpful"} <= set(sel.columns)


def test_select_points_rejects_unknown_value_and_duplicates():
    wide = wide_table({("mva", "a"): (1.0, 0.0)})
    with pytest.raises(ValueError, match="honest"):
        select_points(wide, points_for(wide.index), [{"honest": 1.0}])
    with pytest.raises(ValueError, match="distinct"):
        select_points(wide, points_for(wide.index), [{"helpful": 1.0}, {"helpful": 1.0}])


def hand_scores() -> pd.DataFrame:
    """mva/g vs ind/p on 4 prompts; helpful diffs +1, 0, -1, +2; harmless diffs all 0."""
    helpful = {("mva", "g"): [3.0, 1.0, 0.0, 4.0], ("ind", "p"): [2.0, 1.0, 1.0, 2.0]}
    rows = [
        (m, p, f"q{j}", value, reward)
        for (m, p), rewards in helpful.items()
        for j, r in enumerate(rewards)
        for value, reward in [("helpful", r), ("harmless", 0.5)]
    ]
    return pd.DataFrame(rows, columns=["method", "point_id", "prompt_id", "value", "reward"])


def hand_selection() -> pd.DataFrame:
    return pd.DataFrame({"weighting": ["helpful=1"] * 2, "method": ["mva", "ind"], "point_id": ["g", "p"]})


def test_win_rates_exact_counts_with_ties():
    table = win_rates(hand_scores(), hand_selection(), n_boot=200).set_index("value")
    helpful = table.loc["helpful"]
    assert (helpful.wins, helpful.ties, helpful.losses, helpful.n) == (2, 1, 1, 4)
    assert helpful.win_rate == pytest.approx(0.625)
    assert helpful.strict_win_rate == pytest.approx(2 / 3)
    assert helpful.ci_low <= helpful.win_rate <= helpful.ci_high
    harmless = table.loc["harmless"]
    assert (harmless.wins, harmless.ties, harmless.losses) == (0, 4, 0)
    assert harmless.win_rate == 0.5 and np.isnan(harmless.strict_win_rate)
    assert harmless.ci_low == harmless.ci_high == 0.5
    assert (helpful.baseline, helpful.target_point, helpful.baseline_point) == ("ind", "g", "p")


def test_win_rates_tie_tolerance():
    helpful = win_rates(hand_scores(), hand_selection(), tie_tol=1.0, n_boot=20).set_index("value").loc["helpful"]
    assert (helpful.wins, helpful.ties, helpful.losses) == (1, 3, 0)
    assert helpful.win_rate == pytest.approx(0.625)
    assert helpful.strict_win_rate == 1.0


def test_win_rates_missing_target_named():
    with pytest.raises(ValueError, match="'mva'"):
        win_rates(hand_scores(), hand_selection().iloc[1:], n_boot=5)


def test_select_then_win_rates_end_to_end():
    scores = hand_scores()
    wide = wide_means(mean_rewards(scores, n_boot=20))
    sel = select_points(wide, points_for(wide.index), [{"helpful": 1.0}, {"harmless": 1.0}])
    table = win_rates(scores, sel, n_boot=20)
    assert len(table) == 4 and set(table["weighting"]) == {"helpful=1", "harmless=1"}
