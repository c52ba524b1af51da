"""Figures: the files are valid PNG/PDF, and what was drawn (panels, series, their data, labels, legends) is read
back from the returned Figure."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from mva_core.figures import (
    FigurePaths,
    plot_efficacy,
    plot_frontiers,
    plot_interference,
    plot_reward_heatmaps,
    plot_sensitivity,
    plot_single_vectors,
    plot_training_curves,
    plot_win_rates,
)
from mva_core.reporting import build_tables
from mva_core.rewards import wide_means

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
                  "interference_lambdas": [1.0], "selection_weightings": None, "weightings": [[0.5, 0.5], [0.0, 1.0]],
                  "win_rate_target": "mva", "tie_tolerance": 0.0}
    tables = build_tables(scores, points, prompts, evaluation, ["harmless", "helpful"], seed=0)
    return {"points": points, "wide": wide_means(tables.means, with_ci=True), "wins": tables.win_rates,
            "frontier_ids": dict(zip(tables.frontiers["method"], tables.frontiers["frontier_ids"]))}


def assert_written(paths: FigurePaths):
    """The PNG and PDF exist and are valid; returns the drawn Figure."""
    assert [p.suffix for p in paths] == [".png", ".pdf"] and isinstance(paths, list)
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert all(p.stat().st_size > 1000 for p in paths)
    return paths.figure


def legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def bar_heights(ax) -> dict[str, list[float]]:
    """Heights of each labelled bar series of ``ax``."""
    return {c.get_label(): [bar.get_height() for bar in c] for c in ax.containers if isinstance(c, BarContainer)}


def frontier_xy(run, method: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean rewards of ``method``'s frontier points, sorted along x (as plotted)."""
    front = run["wide"].loc[method].loc[run["frontier_ids"][method]].sort_values(x)
    return front[x].to_numpy(), front[y].to_numpy()


def test_plot_frontiers_draws_each_methods_frontier_singles_and_sft(run, tmp_path):
    fig = assert_written(plot_frontiers(run["wide"], run["points"], run["frontier_ids"], tmp_path / "frontier",
                                        values=("helpful", "harmless")))
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("helpful reward (mean)", "harmless reward (mean)")
    assert ax.get_title() == "Pareto frontiers: helpful vs harmless"
    assert legend_texts(fig.legends[0]) == ["independent frontier", "mva frontier", "soup frontier",
                                            "single value vector", "SFT"]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"independent frontier", "mva frontier", "soup frontier"}
    for method in ("independent", "mva", "soup"):
        x, y = frontier_xy(run, method, "helpful", "harmless")
        np.testing.assert_allclose(lines[f"{method} frontier"].get_xdata(), x)
        np.testing.assert_allclose(lines[f"{method} frontier"].get_ydata(), y)
    # every method's 9 points (faint), its 2 single vectors, and the SFT points (one per method, same λ = 0)
    sizes = sorted(len(c.get_offsets()) for c in ax.collections)
    assert sizes == [2, 2, 2, 3, 9, 9, 9]
    sft = next(c for c in ax.collections if c.get_label() == "SFT")
    expected = run["wide"].xs("0_0", level="point_id")[["helpful", "harmless"]].to_numpy()
    np.testing.assert_allclose(np.asarray(sft.get_offsets()), expected)


def test_plot_frontiers_error_bars_are_the_frontier_points_intervals(run, tmp_path):
    fig = assert_written(plot_frontiers(run["wide"], run["points"], run["frontier_ids"], tmp_path / "frontier",
                                        values=("helpful", "harmless"), error_bars=True, title="custom"))
    (ax,) = fig.axes
    assert ax.get_title() == "custom"
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(bars) == {"independent frontier", "mva frontier", "soup frontier"}
    line, _, (xbars, ybars) = bars["mva frontier"]
    x, y = frontier_xy(run, "mva", "helpful", "harmless")
    np.testing.assert_allclose(np.asarray(line.get_xdata(), float), x)
    front = run["wide"].loc["mva"].loc[run["frontier_ids"]["mva"]].sort_values("helpful")
    y_segments = np.array([segment[:, 1] for segment in ybars.get_segments()])  # (points, [low, high])
    np.testing.assert_allclose(y_segments, front[["harmless_ci_low", "harmless_ci_high"]].to_numpy())
    assert len(xbars.get_segments()) == len(front)


def test_plot_frontiers_names_unknown_frontier_id(run, tmp_path):
    with pytest.raises(ValueError, match="nope"):
        plot_frontiers(run["wide"], run["points"], {"mva": ["nope"]}, tmp_path / "f")


def test_plot_efficacy_draws_a_line_per_method_and_a_panel_per_value(tmp_path):
    rows = [{"method": m, "value": v, "lambda": lam, "estimate": lam * g, "ci_low": lam * g - 0.1,
             "ci_high": lam * g + 0.1} for m, g in (("mva", 1.0), ("soup", 0.8)) for v in ("helpful", "harmless")
            for lam in (0.5, 1.0)]
    axes = assert_written(plot_efficacy(pd.DataFrame(rows), tmp_path / "efficacy")).axes
    assert len(axes) == 2 and [len(ax.containers) for ax in axes] == [2, 2]  # one error-bar line per method
    assert legend_texts(axes[0].get_legend()) == ["mva", "soup"]
    assert axes[0].get_xlabel().startswith("λ of the helpful vector")
    assert [ax.get_title() for ax in axes] == ["helpful: own reward along its vector", "harmless: own reward along its vector"]
    soup_line = axes[1].containers[1].lines[0]
    np.testing.assert_allclose(soup_line.get_ydata(), [0.0, 0.4, 0.8])  # from 0 at λ = 0, then the estimates


def test_plot_interference_draws_a_panel_per_pair_and_a_row_per_method_and_difference(tmp_path):
    rows = [("mva", "a", "b", -1.0, "supported"), ("soup", "a", "b", -3.0, "supported"),
            ("mva − soup", "a", "b", 2.0, "supported"), ("mva − soup @ λ_b = 0.5 (matched efficacy)", "a", "b", 0.2,
                                                         "inconclusive"),
            ("mva", "b", "a", 0.1, "inconclusive"), ("soup", "b", "a", 0.0, "inconclusive")]
    table = pd.DataFrame([{"method": m, "value_u": u, "value_v": v, "lambda": 1.0, "estimate": e, "ci_low": e - 0.5,
                           "ci_high": e + 0.5, "verdict": verdict} for m, u, v, e, verdict in rows])
    axes = assert_written(plot_interference(table, tmp_path / "interference")).axes
    assert [ax.get_title() for ax in axes] == ["a ← b", "b ← a"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [m for m, *_ in rows[3::-1]]  # first row on top
    points = [c.lines[0] for c in axes[0].containers]
    assert [float(line.get_xdata()[0]) for line in points] == [0.2, 2.0, -3.0, -1.0]
    assert points[0].get_markerfacecolor() == "white" and points[1].get_markerfacecolor() != "white"
    assert axes[1].get_xlabel().startswith("change in b reward from adding a at λ = 1")
    two_levels = pd.concat([table, table.assign(**{"lambda": 2.0})], ignore_index=True)
    axes = plot_interference(two_levels, tmp_path / "two_levels").figure.axes
    assert [t.get_text() for t in axes[1].get_yticklabels()] == ["soup (λ = 2)", "mva (λ = 2)", "soup (λ = 1)",
                                                                 "mva (λ = 1)"]
    assert "at λ_u = λ_v = λ" in axes[1].get_xlabel()


def test_plot_interference_says_when_the_grid_has_no_interference_points(tmp_path):
    empty = pd.DataFrame(columns=["method", "value_u", "value_v", "lambda", "estimate", "ci_low", "ci_high", "verdict"])
    axes = assert_written(plot_interference(empty, tmp_path / "interference")).axes  # as the table comes when empty
    assert "no interference rows" in axes[0].texts[0].get_text()


def test_plot_win_rates_one_panel_per_weighting_and_a_bar_per_baseline_and_value(run, tmp_path):
    wins = run["wins"]
    fig = assert_written(plot_win_rates(wins, tmp_path / "wins"))
    weightings = list(dict.fromkeys(wins["weighting"]))
    assert [ax.get_title() for ax in fig.axes] == weightings and len(weightings) == 3
    assert fig.axes[0].get_ylabel() == "mva win rate (%)" and fig.get_suptitle() == "Win rate of mva against baselines"
    assert legend_texts(fig.legends[0]) == ["vs independent", "vs soup"]
    for ax, weighting in zip(fig.axes, weightings):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["harmless", "helpful"]
        part = wins[wins["weighting"] == weighting].set_index(["baseline", "value"])["win_rate"]
        expected = {f"vs {b}": [100 * part[(b, v)] for v in ("harmless", "helpful")] for b in ("independent", "soup")}
        heights = bar_heights(ax)
        assert list(heights) == list(expected)
        for label, values in expected.items():  # pytest.approx takes no nested containers (pytest >= 9.2)
            assert heights[label] == pytest.approx(values), (weighting, label)
        assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2


def test_plot_reward_heatmaps_show_the_methods_grid_per_value(run, tmp_path):
    fig = assert_written(plot_reward_heatmaps(run["wide"], run["points"], "mva", tmp_path / "heat"))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and len(fig.axes) == 4  # two values, each with its colour bar
    assert [ax.get_title() for ax in panels] == ["mva: mean harmless reward", "mva: mean helpful reward"]
    assert (panels[0].get_xlabel(), panels[0].get_ylabel()) == ("λ harmless", "λ helpful")
    means = run["wide"].loc["mva"].join(run["points"].query("method == 'mva'").set_index("point_id"))
    for ax, value in zip(panels, ("harmless", "helpful")):
        expected = means.pivot(index="lam_helpful", columns="lam_harmless", values=value).to_numpy()
        np.testing.assert_allclose(ax.images[0].get_array(), expected)  # rows λ helpful, columns λ harmless
        assert len(ax.texts) == 9 and ax.texts[0].get_text() == f"{expected[0, 0]:.2f}"
    with pytest.raises(ValueError, match="'absent'"):
        plot_reward_heatmaps(run["wide"], run["points"], "absent", tmp_path / "heat2")


def test_plot_single_vectors_a_bar_per_single_vector_and_sft(run, tmp_path):
    fig = assert_written(plot_single_vectors(run["wide"], run["points"], tmp_path / "single", error_bars=True))
    (ax,) = fig.axes
    labels = legend_texts(ax.get_legend())
    assert labels == ["independent/0_0 (SFT)", "mva/0_0 (SFT)", "soup/0_0 (SFT)", "independent/0_1",
                      "independent/1_0", "mva/0_1", "mva/1_0", "soup/0_1", "soup/1_0"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["harmless", "helpful"]
    heights = bar_heights(ax)
    assert heights["mva/1_0"] == pytest.approx(run["wide"].loc[("mva", "1_0"), ["harmless", "helpful"]].tolist())
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == len(labels)


def test_plot_training_curves(tmp_path):
    steps = np.arange(0, 50, 5)
    logs = {
        "independent/helpful": pd.DataFrame({"step": steps, "dpo_loss": np.exp(-steps / 20), "penalty": 0.0}),
        "mva/harmless": pd.DataFrame({"step": steps[::-1], "dpo_loss": np.exp(-steps[::-1] / 30),
                                      "penalty": 0.1 / (1 + steps[::-1])}),  # unsorted: plotted by step
    }
    fig = assert_written(plot_training_curves(logs, tmp_path / "sub" / "curves"))
    loss, penalty = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["DPO loss vs step", "penalty vs step"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["DPO loss", "penalty"] and loss.get_xlabel() == "step"
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == list(logs)
        assert legend_texts(ax.get_legend()) == list(logs)
    np.testing.assert_allclose(loss.lines[1].get_xdata(), steps)
    np.testing.assert_allclose(loss.lines[1].get_ydata(), np.exp(-steps / 30))
    np.testing.assert_allclose(penalty.lines[1].get_ydata(), 0.1 / (1 + steps))
    with pytest.raises(ValueError, match="'bad'"):
        plot_training_curves({"bad": pd.DataFrame({"step": steps})}, tmp_path / "x")


def test_plot_sensitivity_hypervolume_and_hsic_per_series(tmp_path):
    weights = [0.0, 1.0, 10.0, 100.0]
    table = pd.DataFrame([{"weight": w, "series": series, "hypervolume": 1 + k * w / 100,
                           "hv_ci_low": 0.9 + k * w / 100, "hv_ci_high": 1.1 + k * w / 100,
                           "hsic_lora_a_sigma1": 0.1 / (1 + k * w)}
                          for k, series in ((1, "lora_a, sigma 1"), (2, "delta_w, median")) for w in weights[::-1]])
    hv, hsic = assert_written(plot_sensitivity(table, tmp_path / "sensitivity")).axes
    assert hv.get_xscale() == hsic.get_xscale() == "symlog" and hv.get_xlabel() == "HSIC penalty weight"
    assert [c.get_label() for c in hv.containers] == ["delta_w, median", "lora_a, sigma 1"]  # sorted by series
    np.testing.assert_allclose(np.asarray(hv.containers[1].lines[0].get_ydata(), float), [1 + w / 100 for w in weights])
    assert legend_texts(hsic.get_legend()) == ["delta_w, median", "lora_a, sigma 1"]
    np.testing.assert_allclose(hsic.lines[0].get_ydata(), [0.1 / (1 + 2 * w) for w in weights])
