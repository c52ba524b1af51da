"""From scores to the paper's tables, figures and a one-page summary (used by the last workflow stages)."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mva_core.figures import (
    plot_frontiers,
    plot_reward_heatmaps,
    plot_single_vectors,
    plot_training_curves,
    plot_win_rates,
)
from mva_core.frontier import frontier_table, mean_rewards, to_markdown, wide_means
from mva_core.winrate import select_points, win_rates


@dataclass
class EvaluationTables:
    """Everything the evaluation computes from the scores."""

    means: pd.DataFrame
    frontiers: pd.DataFrame
    selections: pd.DataFrame
    win_rates: pd.DataFrame


def build_tables(scores: pd.DataFrame, points: pd.DataFrame, evaluation: Mapping, values: Sequence[str],
                 seed: int) -> EvaluationTables:
    """Mean rewards with CIs, frontiers + hypervolumes with CIs, weighting-selected points and win rates."""
    n_boot, ci = evaluation["bootstrap"], evaluation["ci"]
    means = mean_rewards(scores, n_boot=n_boot, ci=ci, seed=seed)
    frontiers = frontier_table(scores, points, reference=evaluation["reference_point"], n_boot=n_boot, seed=seed, ci=ci)
    weightings = [dict(zip(values, w)) for w in evaluation["weightings"]]
    selections = select_points(wide_means(means), points, weightings)
    methods = set(points["method"])
    target = evaluation["win_rate_target"]
    wins = (
        win_rates(scores, selections, target_method=target, tie_tol=evaluation["tie_tolerance"], n_boot=n_boot,
                  seed=seed, ci=ci)
        if len(methods) > 1
        else pd.DataFrame()
    )
    return EvaluationTables(means, frontiers, selections, wins)


def write_figures(tables: EvaluationTables, points: pd.DataFrame, training_logs: Mapping[str, pd.DataFrame],
                  out_dir: str | Path, values: Sequence[str], heatmap_methods: Sequence[str]) -> list[Path]:
    """Fig. 2-5 style figures (PNG + PDF) for this run; returns every file written."""
    out = Path(out_dir)
    wide = wide_means(tables.means, with_ci=True)
    frontier_ids = dict(zip(tables.frontiers["method"], tables.frontiers["frontier_ids"]))
    written = []
    pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]
    for a, b in pairs:
        written += plot_frontiers(wide, points, frontier_ids, out / f"frontier_{a}_vs_{b}", values=(a, b),
                                  error_bars=True)
    if len(tables.win_rates):
        written += plot_win_rates(tables.win_rates, out / "win_rates")
    for method in heatmap_methods:
        written += plot_reward_heatmaps(wide, points, method, out / f"heatmap_{method}")
    written += plot_single_vectors(wide, points, out / "single_value_vectors", error_bars=True)
    written += plot_training_curves(dict(training_logs), out / "training_curves")
    return written


def summary_markdown(run_name: str, tables: EvaluationTables, rm_accuracy: Sequence[Mapping],
                     decorrelation: Mapping[str, pd.DataFrame], wall_seconds: float | None) -> str:
    """The key numbers of a run as Markdown (results/<run>/summary.md)."""
    lines = [f"# MVA run `{run_name}`", ""]
    if wall_seconds is not None:
        lines += [f"Total job time (sum of Snakemake benchmark wall clocks): {wall_seconds / 60:.1f} min", ""]
    lines += ["## Reward models (pairwise accuracy on held-out eval pairs)", ""]
    lines += [to_markdown(pd.DataFrame([{k: r[k] for k in ("value", "accuracy", "n", "mean_margin")} for r in rm_accuracy])), ""]
    hv = tables.frontiers[["method", "n_points", "n_frontier", "hypervolume", "hv_ci_low", "hv_ci_high"]]
    lines += ["## Hypervolume of each method's Pareto frontier (bootstrap CI over prompts)", "", to_markdown(hv), ""]
    best = hv.sort_values("hypervolume", ascending=False).iloc[0]
    lines += [f"Largest hypervolume: **{best['method']}** ({best['hypervolume']:.4g}).", ""]
    if len(tables.win_rates):
        cols = ["weighting", "baseline", "value", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high"]
        lines += ["## Win rates of the target method's selected model", "", to_markdown(tables.win_rates[cols]), ""]
    rows = []
    for method, table in decorrelation.items():
        for (a, b), part in table.groupby(["value_a", "value_b"]):
            rows.append({"method": method, "pair": f"{a}/{b}", "hsic_lora_a": part["hsic_lora_a"].mean(),
                         "hsic_delta_w": part["hsic_delta_w"].mean(), "cosine_delta_w": part["cosine_delta_w"].mean()})
    if rows:
        lines += ["## Measured decorrelation of the value vectors (mean over LoRA modules)", "",
                  to_markdown(pd.DataFrame(rows)), ""]
    return "\n".join(lines)


def read_accuracies(paths: Sequence[str | Path]) -> list[dict]:
    """The reward-model accuracy JSON files of a run."""
    return [json.loads(Path(p).read_text()) for p in paths]


def total_wall_seconds(benchmark_files: Sequence[str | Path]) -> float:
    """Sum of the wall-clock seconds of Snakemake benchmark TSVs."""
    return float(sum(pd.read_csv(p, sep="\t")["s"].sum() for p in benchmark_files))
