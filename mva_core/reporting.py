"""From scores to the paper's tables, figures and a one-page summary (used by the last workflow stages)."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mva_core.figures import (
    plot_frontiers,
    plot_reward_heatmaps,
    plot_sensitivity,
    plot_single_vectors,
    plot_training_curves,
    plot_win_rates,
)
from mva_core.frontier import frontier_table, mean_rewards, to_markdown, wide_means
from mva_core.winrate import select_points, win_rates


def pool_seeds(scores: pd.DataFrame) -> pd.DataFrame:
    """Treat each (seed, prompt) as one evaluation unit, so means, frontiers and win rates pool all seeds."""
    if "seed" not in scores.columns:
        return scores
    return scores.assign(prompt_id="s" + scores["seed"].astype(str) + "/" + scores["prompt_id"].astype(str))


def hypervolume_by_seed(scores: pd.DataFrame, points: pd.DataFrame, evaluation: Mapping, seed: int) -> pd.DataFrame:
    """Each method's hypervolume per training seed, then mean and a t-interval across seeds (``seed`` = "all")."""
    per_seed = []
    for run_seed, part in scores.groupby("seed", sort=True):
        table = frontier_table(part, points, reference=evaluation["reference_point"], n_boot=evaluation["bootstrap"],
                               seed=seed, ci=evaluation["ci"])
        per_seed.append(table[["method", "hypervolume"]].assign(seed=str(run_seed)))
    table = pd.concat(per_seed, ignore_index=True)
    rows = []
    for method, part in table.groupby("method", sort=True):
        values = part["hypervolume"].to_numpy(dtype=float)
        n, mean = len(values), float(values.mean())
        half = float(stats.t.ppf(0.5 + evaluation["ci"] / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        rows.append({"method": method, "seed": "all", "hypervolume": mean, "ci_low": mean - half, "ci_high": mean + half,
                     "n_seeds": n})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


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
                  out_dir: str | Path, values: Sequence[str], heatmap_methods: Sequence[str],
                  sensitivity: pd.DataFrame | None = None) -> list[Path]:
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
    if sensitivity is not None:
        written += plot_sensitivity(sensitivity, out / "sensitivity")
    return written


def sensitivity_table(methods: Mapping[str, Mapping], frontiers: pd.DataFrame,
                      decorrelation: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Hypervolume and measured HSIC of every grid method whose penalty is HSIC or none (weight 0), by weight.

    Penalty-free methods appear as weight 0 in every (form, sigma) series, so each curve starts at the soup.
    """
    hv = frontiers.set_index("method")
    rows, series = [], set()
    for name, method in methods.items():
        penalty = method["penalty"]
        if method.get("type", "grid") != "grid" or penalty["kind"] not in ("hsic", "none") or name not in decorrelation:
            continue
        label = f"{penalty.get('form', 'lora_a')}, sigma={penalty.get('sigma', 1.0)}" if penalty["kind"] == "hsic" else None
        series.add(label)
        rows.append({"method": name, "series": label, "weight": float(penalty.get("weight", 0.0)),
                     "hypervolume": hv.loc[name, "hypervolume"], "hv_ci_low": hv.loc[name, "hv_ci_low"],
                     "hv_ci_high": hv.loc[name, "hv_ci_high"],
                     "hsic_lora_a": decorrelation[name]["hsic_lora_a"].mean(),
                     "hsic_delta_w": decorrelation[name]["hsic_delta_w"].mean()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    unpenalised = table[table["series"].isna()]
    labelled = [table[table["series"].notna()]]
    labelled += [unpenalised.assign(series=label) for label in sorted(s for s in series if s is not None)]
    return pd.concat(labelled, ignore_index=True)


def summary_markdown(run_name: str, tables: EvaluationTables, rm_accuracy: Sequence[Mapping],
                     decorrelation: Mapping[str, pd.DataFrame], wall_seconds: float | None,
                     seed_hypervolumes: pd.DataFrame | None = None, target: str = "mva") -> str:
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
    if seed_hypervolumes is not None and seed_hypervolumes["seed"].nunique() > 2:
        across = seed_hypervolumes[seed_hypervolumes["seed"] == "all"]
        lines += ["## Hypervolume across training seeds (mean, t-interval)", "",
                  to_markdown(across[["method", "n_seeds", "hypervolume", "ci_low", "ci_high"]]), ""]
    if len(tables.win_rates):
        cols = ["weighting", "baseline", "value", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high"]
        lines += ["## Win rates of the target method's selected model", "", to_markdown(tables.win_rates[cols]), ""]
    claims = paper_claims(tables, decorrelation, target)
    if claims:
        lines += ["## The paper's qualitative claims on this run", "", *claims, ""]
    rows = []
    for method, table in decorrelation.items():
        for (a, b), part in table.groupby(["value_a", "value_b"]):
            rows.append({"method": method, "pair": f"{a}/{b}", "hsic_lora_a": part["hsic_lora_a"].mean(),
                         "hsic_delta_w": part["hsic_delta_w"].mean(), "cosine_delta_w": part["cosine_delta_w"].mean()})
    if rows:
        lines += ["## Measured decorrelation of the value vectors (mean over LoRA modules)", "",
                  to_markdown(pd.DataFrame(rows)), ""]
    return "\n".join(lines)


def paper_claims(tables: EvaluationTables, decorrelation: Mapping[str, pd.DataFrame], target: str) -> list[str]:
    """Each of the paper's qualitative claims that this run can test, with its numbers and a verdict."""
    hv = tables.frontiers.set_index("method")
    lines = []

    def verdict(holds: bool) -> str:
        return "reproduced" if holds else "NOT reproduced"

    if target in hv.index:
        def hv_text(m: str) -> str:
            return f"{hv.loc[m, 'hypervolume']:.4g} [{hv.loc[m, 'hv_ci_low']:.4g}, {hv.loc[m, 'hv_ci_high']:.4g}]"

        for other, claim in [("soup", "decorrelated value vectors give a better frontier than undecorrelated ones (Fig. 2)"),
                             ("ortho", "HSIC beats an orthogonality constraint (Fig. 4)"),
                             ("modpo", "MVA's frontier beats MODPO's (Fig. 2)")]:
            if other in hv.index:
                holds = hv.loc[target, "hypervolume"] > hv.loc[other, "hypervolume"]
                lines.append(f"- {claim}: hypervolume {target} {hv_text(target)} vs {other} {hv_text(other)} "
                             f"-> {verdict(holds)}")
    if len(tables.win_rates):
        mean_rate = tables.win_rates["win_rate"].mean()
        lines.append(f"- {target} wins against the baselines (Fig. 3): mean win rate {mean_rate:.3f} over "
                     f"{len(tables.win_rates)} (weighting, baseline, value) cells -> {verdict(mean_rate > 0.5)}")
    if target in decorrelation and "soup" in decorrelation:
        ours, theirs = decorrelation[target]["hsic_lora_a"].mean(), decorrelation["soup"]["hsic_lora_a"].mean()
        lines.append(f"- the HSIC penalty decorrelates the value vectors: mean HSIC (A rows) {target} {ours:.4g} vs "
                     f"soup {theirs:.4g} -> {verdict(ours < theirs)}")
    return lines


def read_decorrelation(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """Decorrelation tables ``.../seed_<s>/decorrelation/<method>.parquet`` per method, seeds stacked."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for path in map(Path, paths):
        frames.setdefault(path.stem, []).append(pd.read_parquet(path).assign(seed=path.parent.parent.name))
    return {method: pd.concat(parts, ignore_index=True) for method, parts in frames.items()}


def read_accuracies(paths: Sequence[str | Path]) -> list[dict]:
    """The reward-model accuracy JSON files of a run."""
    return [json.loads(Path(p).read_text()) for p in paths]


def total_wall_seconds(benchmark_files: Sequence[str | Path]) -> float:
    """Sum of the wall-clock seconds of Snakemake benchmark TSVs."""
    return float(sum(pd.read_csv(p, sep="\t")["s"].sum() for p in benchmark_files))
