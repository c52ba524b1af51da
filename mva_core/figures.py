"""Paper-style figures (Figs. 2, 3, 5 and diagnostics); every function writes ``<stem>.png`` and ``<stem>.pdf``
and returns their paths (a ``FigurePaths`` list, whose ``figure`` is the drawn Figure).

Figures are built on bare ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot state), so plotting is
thread-safe and leaks no open figures.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mva_core.artifacts import atomic_file
from mva_core.contracts import (
    EFFICACY,
    INTERFERENCE,
    NUMBER,
    SENSITIVITY,
    TRAINING_LOG,
    WIN_RATES,
    TableContract,
    lam_columns,
    validate_table,
)
from mva_core.rewards import CI_SUFFIXES, KEY, attach_points, value_columns

FORMATS = ("png", "pdf")


class FigurePaths(list):
    """The paths a plot function wrote (PNG, PDF), as a plain list; ``figure`` is the Figure they show, for
    inspecting what was drawn (axes, lines, labels) without reading the image back."""

    def __init__(self, paths: list[Path], figure: Figure):
        super().__init__(paths)
        self.figure = figure


def save_figure(fig: Figure, path_stem: str | os.PathLike) -> FigurePaths:
    """Write ``fig`` atomically as PNG and PDF next to ``path_stem``; return the paths (and ``fig``)."""
    paths = []
    for fmt in FORMATS:
        path = Path(f"{os.fspath(path_stem)}.{fmt}")
        metadata = {"CreationDate": None} if fmt == "pdf" else None  # byte-stable PDFs across reruns
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return FigurePaths(paths, fig)


def _color(i: int) -> tuple[float, ...]:
    return colormaps["tab10"](i % 10)


def _yerr(table: pd.DataFrame, value: str) -> np.ndarray:
    """Asymmetric error-bar array (2, n) from ``<value>_ci_low/_ci_high`` columns."""
    validate_table(table, TableContract("means_wide (for error bars)", {f"{value}{s}": NUMBER for s in CI_SUFFIXES}))
    return np.vstack([table[value] - table[f"{value}_ci_low"], table[f"{value}_ci_high"] - table[value]])


def _pick_pair(wide: pd.DataFrame, values: tuple[str, str] | None) -> tuple[str, str]:
    available = value_columns(wide)
    pair = tuple(values) if values is not None else tuple(available[:2])
    if len(pair) != 2 or any(v not in available for v in pair):
        raise ValueError(f"values must name two of {available}, got {values}")
    return pair


def _method_frontier(group: pd.DataFrame, method: str, ids: Sequence[str], x: str) -> pd.DataFrame:
    by_id = group.set_index("point_id")
    missing = [i for i in ids if i not in by_id.index]
    if missing:
        raise ValueError(f"frontier ids {missing} of method {method!r} are not in means_wide")
    return by_id.loc[list(ids)].sort_values(x)


def plot_frontiers(
    means_wide: pd.DataFrame,
    points: pd.DataFrame,
    frontier_ids: Mapping[str, Sequence[str]],
    path_stem: str | os.PathLike,
    values: tuple[str, str] | None = None,
    error_bars: bool = False,
    title: str | None = None,
) -> FigurePaths:
    """Fig. 2: every method's points (faint) and Pareto frontier in the plane of two values.

    SFT rows are stars, single value vectors triangles; ``error_bars`` draws the frontier points' CIs
    (needs ``wide_means(..., with_ci=True)``). ``values`` defaults to the first two value columns.
    """
    x, y = _pick_pair(means_wide, values)
    table = attach_points(means_wide, points)
    fig = Figure(figsize=(7.6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    single_label = "single value vector"
    for i, (method, group) in enumerate(table.groupby("method", sort=True)):
        color = _color(i)
        ax.scatter(group[x], group[y], color=color, alpha=0.25, s=14, linewidths=0)
        front = _method_frontier(group, method, frontier_ids.get(method, []), x)
        if error_bars and len(front):
            ax.errorbar(front[x], front[y], xerr=_yerr(front, x), yerr=_yerr(front, y), fmt="-o", ms=4,
                        color=color, capsize=2, label=f"{method} frontier")
        elif len(front):
            ax.plot(front[x], front[y], "-o", ms=4, color=color, label=f"{method} frontier")
        singles = group[group["kind"] == "single"]
        if len(singles):
            ax.scatter(singles[x], singles[y], marker="^", s=70, color=color, edgecolors="black", zorder=4,
                       label=single_label)
            single_label = None
    sft = table[table["kind"] == "sft"]
    if len(sft):
        ax.scatter(sft[x], sft[y], marker="*", s=240, color="gold", edgecolors="black", zorder=5, label="SFT")
    ax.set_xlabel(f"{x} reward (mean)")
    ax.set_ylabel(f"{y} reward (mean)")
    ax.set_title(title or f"Pareto frontiers: {x} vs {y}")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] in ("single value vector", "SFT"))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside right upper", fontsize="small")
    return save_figure(fig, path_stem)


def _grouped_bars(ax: Axes, groups: Sequence[str], series: Mapping[str, tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Bars at ``groups`` on the x axis, one bar per series; series maps label → (heights, (2, n) errors)."""
    width = 0.8 / max(len(series), 1)
    base = np.arange(len(groups))
    for i, (label, (heights, err)) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(base + offset, heights, width, yerr=err, capsize=3, color=_color(i), label=label)
    ax.set_xticks(base, groups)


def _percent_grid(part: pd.DataFrame, column: str, baselines: list[str], values: list[str]) -> np.ndarray:
    """``100 × column`` as a (baseline, value) array; NaN where a pair is absent."""
    grid = part.pivot(index="baseline", columns="value", values=column).reindex(index=baselines, columns=values)
    return 100 * grid.to_numpy(dtype=float)


def plot_win_rates(win_table: pd.DataFrame, path_stem: str | os.PathLike, title: str | None = None) -> FigurePaths:
    """Fig. 3: target's win rate (%) per value and baseline with CI error bars; one panel per weighting."""
    validate_table(win_table, WIN_RATES.only("weighting", "baseline", "value", "win_rate", "ci_low", "ci_high"))
    if win_table.empty:
        raise ValueError("win-rate table is empty")
    weightings = list(dict.fromkeys(win_table["weighting"]))
    values = list(dict.fromkeys(win_table["value"]))
    target = win_table["target"].iloc[0] if "target" in win_table else "target"
    fig = Figure(figsize=(max(4.5, 2.2 * len(values)) * len(weightings), 4.2), layout="constrained")
    axes = fig.subplots(1, len(weightings), sharey=True, squeeze=False)[0]
    baselines = list(dict.fromkeys(win_table["baseline"]))
    for ax, weighting in zip(axes, weightings):
        part = win_table[win_table["weighting"] == weighting]
        rate, low, high = (_percent_grid(part, c, baselines, values) for c in ["win_rate", "ci_low", "ci_high"])
        series = {f"vs {b}": (rate[i], np.vstack([rate[i] - low[i], high[i] - rate[i]])) for i, b in enumerate(baselines)}
        _grouped_bars(ax, values, series)
        ax.axhline(50, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0, 102)
        ax.set_xlabel("value (reward model)")
        ax.set_title(str(weighting), fontsize="medium")
    axes[0].set_ylabel(f"{target} win rate (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize="small")
    fig.suptitle(title or f"Win rate of {target} against baselines")
    return save_figure(fig, path_stem)


def plot_reward_heatmaps(
    means_wide: pd.DataFrame,
    points: pd.DataFrame,
    method: str,
    path_stem: str | os.PathLike,
) -> FigurePaths:
    """Mean reward of each value over the (λ_a, λ_b) grid of ``method``'s points (all kinds), one panel per value."""
    lams = lam_columns(points)
    if len(lams) != 2:
        raise ValueError(f"reward heat maps need exactly two lam_* columns in points, got {lams}")
    table = attach_points(means_wide, points)
    table = table[table["method"] == method].copy()
    table[lams] = table[lams].round(10)  # 0.1 + 0.2 and 0.3 share a cell
    if table.empty:
        raise ValueError(f"method {method!r} has no points in means_wide")
    dup = table.duplicated(lams, keep=False)
    if dup.any():
        raise ValueError(f"method {method!r} has several points at one λ: {table.loc[dup, 'point_id'].tolist()}")
    values = value_columns(means_wide)
    a, b = lams
    fig = Figure(figsize=(5.0 * len(values), 4.2), layout="constrained")
    for ax, value in zip(fig.subplots(1, len(values), squeeze=False)[0], values):
        grid = table.pivot(index=b, columns=a, values=value).sort_index().sort_index(axis=1)
        image = ax.imshow(grid.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(grid.shape[1]), [f"{lam:g}" for lam in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{lam:g}" for lam in grid.index])
        ax.set_xlabel(f"λ {a.removeprefix('lam_')}")
        ax.set_ylabel(f"λ {b.removeprefix('lam_')}")
        ax.set_title(f"{method}: mean {value} reward")
        fig.colorbar(image, ax=ax, label=f"{value} reward")
        for (row, col), reward in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(reward):
                ink = "black" if image.norm(reward) > 0.6 else "white"
                ax.text(col, row, f"{reward:.2f}", ha="center", va="center", color=ink, fontsize="x-small")
    return save_figure(fig, path_stem)


def plot_single_vectors(
    means_wide: pd.DataFrame,
    points: pd.DataFrame,
    path_stem: str | os.PathLike,
    error_bars: bool = False,
) -> FigurePaths:
    """Fig. 5: rewards of every single value vector (and SFT) on each value, grouped by reward model."""
    table = attach_points(means_wide, points)
    singles = table[table["kind"] == "single"].sort_values(KEY)
    if singles.empty:
        raise ValueError("no points of kind 'single' to plot")
    table = pd.concat([table[table["kind"] == "sft"].sort_values(KEY), singles])
    values = value_columns(means_wide)
    heights = table[values].to_numpy(dtype=float)
    errs = np.stack([_yerr(table, v) for v in values], axis=-1) if error_bars else None
    labels = [f"{m}/{p}" + (" (SFT)" if k == "sft" else "") for m, p, k in table[[*KEY, "kind"]].itertuples(index=False)]
    series = {label: (heights[i], None if errs is None else errs[:, i, :]) for i, label in enumerate(labels)}
    fig = Figure(figsize=(max(5.0, 2.0 + 0.35 * len(values) * len(series)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, values, series)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("value (reward model)")
    ax.set_ylabel("mean reward")
    ax.set_title("Single value vectors")
    ax.legend(fontsize="small")
    return save_figure(fig, path_stem)


def plot_training_curves(logs: Mapping[str, pd.DataFrame], path_stem: str | os.PathLike) -> FigurePaths:
    """DPO loss and decorrelation penalty vs step for each run (keys label the runs, e.g. ``mva/harmless``)."""
    if not logs:
        raise ValueError("no training logs given")
    for label, log in logs.items():
        validate_table(log, TRAINING_LOG, repr(label))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, (label, log) in enumerate(logs.items()):
        log = log.sort_values("step")
        for ax, column in zip(axes, ["dpo_loss", "penalty"]):
            ax.plot(log["step"], log[column], color=_color(i), label=label)
    for ax, name in zip(axes, ["DPO loss", "penalty"]):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(f"{name} vs step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path_stem)


def plot_sensitivity(table: pd.DataFrame, path_stem: str | os.PathLike) -> FigurePaths:
    """Hypervolume (with CI) and measured HSIC against the penalty weight, one line per (form, sigma)."""
    validate_table(table, SENSITIVITY)
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    hv_ax, hsic_ax = fig.subplots(1, 2)
    for i, (series, part) in enumerate(table.sort_values("weight").groupby("series", sort=True)):
        err = np.vstack([part["hypervolume"] - part["hv_ci_low"], part["hv_ci_high"] - part["hypervolume"]])
        hv_ax.errorbar(part["weight"], part["hypervolume"], yerr=err, fmt="-o", capsize=3, color=_color(i), label=series)
        hsic_ax.plot(part["weight"], part["hsic_lora_a_sigma1"], "-o", color=_color(i), label=series)
    for ax, name in ((hv_ax, "hypervolume"), (hsic_ax, "measured HSIC (A rows, sigma 1, mean over modules)")):
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("HSIC penalty weight")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    hv_ax.set_title("Frontier hypervolume vs penalty weight")
    hsic_ax.set_title("Decorrelation achieved vs penalty weight")
    hsic_ax.legend(fontsize="small")
    return save_figure(fig, path_stem)


def plot_efficacy(efficacy: pd.DataFrame, path_stem: str | os.PathLike) -> FigurePaths:
    """Own reward minus SFT's along each value vector's λ line, with CIs: one panel per value, a line per method."""
    validate_table(efficacy, EFFICACY.only("method", "value", "lambda", "estimate", "ci_low", "ci_high"))
    values = list(dict.fromkeys(efficacy["value"]))
    fig = Figure(figsize=(4.2 * len(values), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(values), squeeze=False)[0])
    for ax, value in zip(axes, values):
        part = efficacy[efficacy["value"] == value]
        groups = list(part.groupby("method", sort=True))
        dodge = 0.015 * max(float(part["lambda"].abs().max()), 1e-9)  # side by side: methods can coincide
        for i, (method, line) in enumerate(groups):
            line = line.sort_values("lambda")
            lam = np.concatenate([[0.0], line["lambda"]]) + (i - (len(groups) - 1) / 2) * dodge
            est = np.concatenate([[0.0], line["estimate"]])
            err = np.vstack([np.concatenate([[0.0], line["estimate"] - line["ci_low"]]),
                             np.concatenate([[0.0], line["ci_high"] - line["estimate"]])])
            ax.errorbar(lam, est, yerr=err, fmt="-o", ms=4, capsize=3, color=_color(i), label=method)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"λ of the {value} vector (others 0)")
        ax.set_ylabel(f"{value} reward − SFT's")
        ax.set_title(f"{value}: own reward along its vector")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return save_figure(fig, path_stem)


def plot_interference(interference: pd.DataFrame, path_stem: str | os.PathLike) -> FigurePaths:
    """Forest plot of ``tables/interference``: one panel per ordered pair (u <- v), a row per method and per
    paired difference with a baseline (plain and at matched efficacy) at each λ, estimate and CI; filled markers
    where the verdict is ``supported``. A grid without the λ points the table needs gets a panel that says so."""
    validate_table(interference, INTERFERENCE.only("method", "value_u", "value_v", "lambda", "estimate", "ci_low",
                                                   "ci_high", "verdict"))
    pairs = list(dict.fromkeys(zip(interference["value_u"], interference["value_v"])))
    rows_per_panel = int(interference.groupby(["value_u", "value_v"]).size().max()) if pairs else 0
    ncols = min(2, max(len(pairs), 1))
    nrows = -(-max(len(pairs), 1) // ncols)
    fig = Figure(figsize=(6.5 * ncols, nrows * max(2.5, 0.45 * rows_per_panel + 1.2)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(pairs):]:
        ax.set_axis_off()
    levels = sorted(set(interference["lambda"]))
    at = f"λ = {levels[0]:g}" if len(levels) == 1 else "λ_u = λ_v = λ"
    if not pairs:
        axes[0].text(0.5, 0.5, "no interference rows: the grid lacks λ_u = 1 with λ_v = 0 and 1", ha="center",
                     va="center", transform=axes[0].transAxes)
    for ax, (u, v) in zip(axes, pairs):
        part = interference[(interference["value_u"] == u) & (interference["value_v"] == v)].iloc[::-1]
        labels = [m if len(levels) == 1 else f"{m} (λ = {lam:g})" for m, lam in zip(part["method"], part["lambda"])]
        y = np.arange(len(part))
        for row, yy in zip(part.itertuples(), y):
            colour = _color(0 if " − " not in row.method else 1 if "matched" not in row.method else 2)
            ax.errorbar([row.estimate], [yy], xerr=[[row.estimate - row.ci_low], [row.ci_high - row.estimate]],
                        fmt="o", capsize=3, color=colour, mfc=colour if row.verdict == "supported" else "white")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_xlabel(f"change in {u} reward from adding {v} at {at}\n(a − b rows: a's change minus b's)")
        ax.set_title(f"{u} ← {v}")
        ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path_stem)
