from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mva_core.figures import (
    plot_efficacy,
    plot_frontiers,
    plot_reward_heatmaps,
    plot_single_vectors,
    plot_training_curves,
    plot_win_rates,
)
from mva_core.frontier import wide_means
from mva_core.reporting import build_tables

LAMS = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def run() -> dict:
    """A 3x3 λ grid for 'mva' and 'soup' (single vectors at the axes), an SFT point, and its derived tables."""
    rng = np.random.default_rng(0)
    point_rows, score_rows = [], []
    for method, gain in [("mva", 1.2), ("soup", 1.0), ("independent", 0.9)]:
        for a in LAMS:
            for b in LAMS:
                kind = "sft" if a == b == 0 else "single" if a * b == 0 and a + b == 1 else "grid"
                point_rows.append({"method": method, "point_id": f"{a:g}_{b:g}", "kind": kind,
                                   "lam_harmless": a, "lam_helpful": b})
                for j in range(12):
                    for value, centre in [("harmless", gain * a - 0.3 * b), ("helpful", gain * b - 0.3 * a)]:
                        score_rows.append((method, f"{a:g}_{b:g}", f"q{j}", value, centre + rng.normal(0, 0.2)))
    points = pd.DataFrame(point_rows)
    scores = pd.DataFrame(score_rows, columns=["method", "point_id", "prompt_id", "value", "reward"])
    prompts = pd.DataFrame({"prompt_id": [f"q{j}" for j in range(12)], "origin": "x"})
    evaluation = {"bootstrap": 50, "ci": 0.95, "reference_point": "min", "selection_fraction": 0.5,
                  "selection_weightings": None, "weightings": [[0.5, 0.5], [0.0, 1.0]], "win_rate_target": "mva",
                  "tie_tolerance": 0.0}
    tables = build_tables(scores, points, prompts, evaluation, ["harmless", "helpful"], seed=0)
    return {"points": points, "wide": wide_means(tables.means, with_ci=True), "wins": tables.win_rates,
            "frontier_ids": dict(zip(tables.frontiers["method"], tables.frontiers["frontier_ids"]))}


def assert_written(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("error_bars", [False, True])
def test_plot_frontiers(run, tmp_path, error_bars):
    paths = plot_frontiers(run["wide"], run["points"], run["frontier_ids"], tmp_path / "frontier",
                           values=("helpful", "harmless"), error_bars=error_bars)
    assert_written(paths)


def test_plot_frontiers_names_unknown_frontier_id(run, tmp_path):
    with pytest.raises(ValueError, match="nope"):
        plot_frontiers(run["wide"], run["points"], {"mva": ["nope"]}, tmp_path / "f")


def test_plot_efficacy_draws_a_line_per_method_and_a_panel_per_value(tmp_path):
    import matplotlib.figure

    rows = [{"method": m, "value": v, "lambda": lam, "estimate": lam * g, "ci_low": lam * g - 0.1,
             "ci_high": lam * g + 0.1} for m, g in (("mva", 1.0), ("soup", 0.8)) for v in ("helpful", "harmless")
            for lam in (0.5, 1.0)]
    captured = {}
    original = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        captured["figure"] = self
        return original(self, *args, **kwargs)

    matplotlib.figure.Figure.savefig = keep
    try:
        assert_written(plot_efficacy(pd.DataFrame(rows), tmp_path / "efficacy"))
    finally:
        matplotlib.figure.Figure.savefig = original
    axes = captured["figure"].axes
    assert len(axes) == 2 and [len(ax.containers) for ax in axes] == [2, 2]  # one error-bar line per method
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["mva", "soup"]
    assert axes[0].get_xlabel().startswith("λ of the helpful vector")


def test_plot_win_rates(run, tmp_path):
    assert_written(plot_win_rates(run["wins"], tmp_path / "wins"))


def test_plot_reward_heatmaps(run, tmp_path):
    assert_written(plot_reward_heatmaps(run["wide"], run["points"], "mva", tmp_path / "heat"))
    with pytest.raises(ValueError, match="'absent'"):
        plot_reward_heatmaps(run["wide"], run["points"], "absent", tmp_path / "heat2")


def test_plot_single_vectors(run, tmp_path):
    assert_written(plot_single_vectors(run["wide"], run["points"], tmp_path / "single", error_bars=True))


def test_plot_training_curves(tmp_path):
    steps = np.arange(0, 50, 5)
    logs = {
        "independent/helpful": pd.DataFrame({"step": steps, "dpo_loss": np.exp(-steps / 20), "penalty": 0.0}),
        "mva/harmless": pd.DataFrame({"step": steps, "dpo_loss": np.exp(-steps / 30), "penalty": 0.1 / (1 + steps)}),
    }
    assert_written(plot_training_curves(logs, tmp_path / "sub" / "curves"))
    with pytest.raises(ValueError, match="'bad'"):
        plot_training_curves({"bad": pd.DataFrame({"step": steps})}, tmp_path / "x")
