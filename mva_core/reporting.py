"""From scores to the paper's tables, figures and a one-page summary (used by the last workflow stages)."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mva_core.comparisons import ALL_WEIGHTINGS, HYPERVOLUME, Comparator, hypervolume_reference
from mva_core.decorrelation import MEASURES, table_columns
from mva_core.effects import EffectEstimator, efficacy_table, interference_table
from mva_core.figures import (
    plot_efficacy,
    plot_frontiers,
    plot_interference,
    plot_reward_heatmaps,
    plot_sensitivity,
    plot_single_vectors,
    plot_training_curves,
    plot_win_rates,
)
from mva_core.frontier import pareto_mask
from mva_core.methods import method_from_section
from mva_core.rewards import KEY, SeededRewards, seeded_rewards, wide_means
from mva_core.selection import (
    SELECTION,
    TEST,
    hull_counts,
    select_held_out,
    selected_test_rewards,
    selection_weightings,
    split_prompts,
    value_scales,
    weighting_label,
)
from mva_core.statistics import Estimate, cluster_resamples, judge, primary_mask, t_interval

TABLE_FILES = {"means": "mean_rewards", "frontiers": "frontiers", "selections": "selections", "win_rates": "win_rates",
               "comparisons": "comparisons", "baseline_comparisons": "baseline_comparisons",
               "leader": "hypervolume_leader", "seed_hypervolumes": "hypervolume_by_seed", "design": "design",
               "efficacy": "efficacy", "interference": "interference"}
"""Field of :class:`EvaluationTables` -> its file stem under ``tables/``."""
MARKDOWN_TABLES = ["frontiers", "win_rates", "comparisons", "baseline_comparisons", "efficacy", "interference"]
"""The tables also written as Markdown."""


@dataclass
class EvaluationTables:
    """Everything the evaluation computes from the scores (``tables/<field>.parquet``)."""

    means: pd.DataFrame
    frontiers: pd.DataFrame
    selections: pd.DataFrame
    win_rates: pd.DataFrame
    comparisons: pd.DataFrame
    baseline_comparisons: pd.DataFrame
    leader: pd.DataFrame
    seed_hypervolumes: pd.DataFrame
    design: pd.DataFrame
    efficacy: pd.DataFrame
    interference: pd.DataFrame


def point_means(selection: SeededRewards, test: SeededRewards, ci: float) -> pd.DataFrame:
    """Per (method, point_id, value): mean reward on the test prompts (all seeds) with its Student-t interval over
    seeds and prompts (``statistics.judge``), and the mean on the selection prompts (what selection and frontier
    membership saw)."""
    rows = []
    for k, (method, point_id) in enumerate(test.keys):
        for v, value in enumerate(test.values):
            judged = judge(Estimate(test.rewards[:, k, v].mean(), samples=test.rewards[:, k, v]), ci)
            rows.append({"method": method, "point_id": point_id, "value": value, "mean": judged["estimate"],
                         "ci_low": judged["ci_low"], "ci_high": judged["ci_high"], "df": judged["df"],
                         "mean_selection": float(selection.rewards[:, k, v].mean())})
    return pd.DataFrame(rows).assign(n_prompts=len(test.prompts), n_seeds=len(test.seeds))


def descriptive_frontiers(means: pd.DataFrame) -> pd.DataFrame:
    """Per method: its points' count and Pareto-optimal point ids, judged on the selection prompts (a figure, not
    evidence: the hypervolume of a union of noisy points grows with their number)."""
    wide = means.pivot(index=KEY, columns="value", values="mean_selection")
    rows = []
    for method, group in wide.groupby(level="method", sort=True):
        front = group.index[pareto_mask(group.to_numpy(dtype=float))].get_level_values("point_id")
        rows.append({"method": method, "n_points": len(group), "n_frontier": len(front), "frontier_ids": list(front)})
    return pd.DataFrame(rows)


def hypervolume_by_seed(comparator: Comparator, seeds: Sequence[str], ci: float) -> pd.DataFrame:
    """Each method's held-out hypervolume per training seed, then mean and a t-interval across seeds (a
    description: the paired comparisons are the evidence); ``hypervolume`` in raw reward units, ``hypervolume_std``
    standardised."""
    rows, unit = [], comparator.hypervolume_unit
    for method in comparator.selected:
        per_seed = [comparator.seed_hypervolume(method, s) * unit for s in range(len(seeds))]
        rows += [{"method": method, "seed": seed, "hypervolume": hv, "hypervolume_std": hv / unit}
                 for seed, hv in zip(seeds, per_seed)]
        mean, low, high = t_interval(per_seed, ci)
        rows.append({"method": method, "seed": "all", "hypervolume": mean, "hypervolume_std": mean / unit,
                     "ci_low": low, "ci_high": high, "n_seeds": len(per_seed)})
    return pd.DataFrame(rows)


def _reference_setting(how: str | Sequence[float], values: Sequence[str], columns: Sequence[str]) -> str | list[float]:
    """``evaluation.reference_point`` with explicit numbers (given in training order) put in ``columns`` order."""
    if isinstance(how, str):
        return how
    if len(how) != len(values):
        raise ValueError(f"evaluation.reference_point {list(how)} needs one number per value {list(values)}")
    return [float(dict(zip(values, how))[c]) for c in columns]


def selection_counts(selections: pd.DataFrame, seeds: Sequence[str]) -> pd.DataFrame:
    """Per method: ``n_selected`` (distinct points over all seeds and weightings) and ``n_selected_per_seed`` (the
    distinct points of each training seed, in ``seeds`` order)."""
    per_seed = selections.groupby(["method", "seed"])["point_id"].nunique()
    return pd.DataFrame([{"method": method, "n_selected": int(part["point_id"].nunique()),
                          "n_selected_per_seed": [int(per_seed[(method, seed)]) for seed in seeds]}
                         for method, part in selections.groupby("method", sort=False)])


def build_tables(scores: pd.DataFrame, points: pd.DataFrame, prompts: pd.DataFrame, evaluation: Mapping,
                 values: Sequence[str], seed: int, baselines: Sequence[str] = (),
                 references: Mapping[str, str] | None = None, planted: Sequence[str] = ()) -> EvaluationTables:
    """Held-out selection (on standardised rewards: ``selection.value_scales``, echoed in ``design``), point means,
    frontiers, paired comparisons, win rates, per-seed hypervolumes, and the efficacy and interference tables
    (``mva_core.effects``; every evaluation prompt, matched-efficacy rows on the test prompts).

    ``values`` is the training order (weightings are given in it); ``seed`` seeds the resamples; ``baselines`` are
    the penalty-free grid methods other methods' interference and held-out rewards are compared with;
    ``references`` (method -> the method its vectors are computed from) and ``planted`` (controls claiming more
    interference) go to ``effects.interference_table``.
    """
    rewards = seeded_rewards(scores)
    split = split_prompts(prompts[prompts["prompt_id"].isin(rewards.prompts)], evaluation["selection_fraction"])
    selection = rewards.prompt_subset(split.loc[split["part"] == SELECTION, "prompt_id"].tolist())
    test = rewards.prompt_subset(split.loc[split["part"] == TEST, "prompt_id"].tolist())
    weightings = selection_weightings(values, evaluation["selection_weightings"], evaluation["weightings"])
    scales = value_scales(selection, points)
    selections = select_held_out(selection, points, weightings, scales.scales)
    resamples = cluster_resamples(len(test.prompts), len(test.seeds), evaluation["bootstrap"], seed)
    ci = evaluation["ci"]
    margins = evaluation.get("equivalence_margins") or {}
    primary = evaluation.get("primary_rows") or []
    means = point_means(selection, test, ci)
    kinds = points.astype({"method": str, "point_id": str}).set_index(KEY)["kind"]
    reference = hypervolume_reference(test.rewards, np.array([kinds.get(k) == "sft" for k in test.keys]),
                                      _reference_setting(evaluation["reference_point"], values, test.values), resamples)
    comparator = Comparator(selected_test_rewards(test, selections, weightings), weightings, test.values, reference,
                            resamples, ci, evaluation["tie_tolerance"], scales.scales, margins)
    frontiers = (descriptive_frontiers(means).merge(comparator.hypervolume_table(), on="method")
                 .merge(selection_counts(selections, test.seeds), on="method")
                 .merge(hull_counts(selection, weightings, scales.scales), on="method")
                 .assign(**{f"ref_{v}": float(r) for v, r in zip(test.values, reference.value)}))
    target = evaluation["win_rate_target"]
    several = len(comparator.selected) > 1
    win_labels = [weighting_label(dict(zip(values, w))) for w in evaluation["weightings"]] + [ALL_WEIGHTINGS]
    every_prompt = EffectEstimator(rewards, ci, margins=margins)
    matched = EffectEstimator(test, ci, selection, margins)
    design = pd.DataFrame([{"n_prompts": len(rewards.prompts), "n_selection_prompts": len(selection.prompts),
                            "n_test_prompts": len(test.prompts), "n_seeds": len(test.seeds),
                            "n_weightings": len(weightings), "n_boot": resamples.n_boot, "ci": ci,
                            "seeds_resampled": resamples.resamples_seeds, **scales.columns(),
                            "equivalence_margins": json.dumps(dict(margins), sort_keys=True),
                            "primary_rows": json.dumps(list(primary))}])
    comparisons = with_primary(comparator.comparisons(target) if several else pd.DataFrame(), "comparisons", primary)
    return EvaluationTables(
        means=means,
        frontiers=frontiers,
        selections=selections,
        win_rates=comparator.win_rate_table(target, win_labels) if several else pd.DataFrame(),
        comparisons=comparisons,
        baseline_comparisons=with_primary(comparator.against_baselines(baselines), "baseline_comparisons", primary),
        leader=comparisons[comparisons["metric"] == HYPERVOLUME].reset_index(drop=True) if several else pd.DataFrame(),
        seed_hypervolumes=hypervolume_by_seed(comparator, test.seeds, ci),
        design=design,
        efficacy=with_primary(efficacy_table(every_prompt, points, values), "efficacy", primary),
        interference=with_primary(interference_table(every_prompt, points, values, baselines,
                                                     evaluation["interference_lambdas"], matched, references, planted),
                                  "interference", primary),
    )


def with_primary(table: pd.DataFrame, name: str, primary_rows: Sequence[Mapping]) -> pd.DataFrame:
    """``table`` (named ``name``) with a ``primary`` column: whether the row is one of the pre-specified claims."""
    if len(table.columns) == 0:  # one method: nothing was compared
        return table
    return table.assign(primary=primary_mask(table, name, primary_rows))


def write_figures(tables: EvaluationTables, points: pd.DataFrame, training_logs: Mapping[str, pd.DataFrame],
                  out_dir: str | Path, values: Sequence[str], heatmap_methods: Sequence[str],
                  sensitivity: pd.DataFrame | None = None, interference: bool = False) -> list[Path]:
    """Fig. 2-5 style figures (PNG + PDF) for this run, and the interference forest plot if ``interference``;
    returns every file written."""
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
    if len(tables.efficacy):
        written += plot_efficacy(tables.efficacy, out / "efficacy")
    if interference:
        written += plot_interference(tables.interference, out / "interference")
    written += plot_training_curves(dict(training_logs), out / "training_curves")
    if sensitivity is not None:
        written += plot_sensitivity(sensitivity, out / "sensitivity")
    return written


def sensitivity_table(methods: Mapping[str, Mapping], frontiers: pd.DataFrame,
                      decorrelation: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Held-out hypervolume and measured dependence, by penalty weight, of every method (``methods.<name>``
    sections) whose type and penalty kind put it in the sensitivity analysis (``Method.sensitivity``); the
    dependence columns use the same estimators for every row (``decorrelation.MEASURES``).

    Penalty-free methods appear as weight 0 in every series, so each curve starts at the soup.
    """
    hv = frontiers.set_index("method")
    rows, series = [], set()
    for name, settings in methods.items():
        method = method_from_section(name, settings)
        if not method.sensitivity or name not in decorrelation:
            continue
        label = method.sensitivity_series
        series.add(label)
        rows.append({"method": name, "series": label, "weight": float(method.penalty.get("weight", 0.0)),
                     "hypervolume": hv.loc[name, "hypervolume"], "hv_ci_low": hv.loc[name, "hv_ci_low"],
                     "hv_ci_high": hv.loc[name, "hv_ci_high"], **decorrelation[name][[*MEASURES, "norm_b"]].mean().to_dict()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    unpenalised = table[table["series"].isna()]
    labelled = [table[table["series"].notna()]]
    labelled += [unpenalised.assign(series=label) for label in sorted(s for s in series if s is not None)]
    return pd.concat(labelled, ignore_index=True)


def read_decorrelation(paths: Sequence[str | Path], sets: Mapping[str, str],
                       read: Callable[[Path], pd.DataFrame] = pd.read_parquet) -> dict[str, pd.DataFrame]:
    """Decorrelation tables ``.../seed_<s>/decorrelation/<vector set>.parquet`` (seeds stacked; ``read`` reads one,
    e.g. an archive's CSV) joined back to the methods: ``sets`` maps each method to its vector set, so methods sharing
    vectors share a table (``sets`` order)."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for path in map(Path, paths):
        table = read(path)
        missing = [c for c in table_columns() if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: decorrelation table lacks columns {missing[:3]}{' ...' if len(missing) > 3 else ''}"
                             " (written by an older version: rerun it, e.g. snakemake --forcerun decorrelation_table)")
        frames.setdefault(path.stem, []).append(table.assign(seed=path.parent.parent.name))
    tables = {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}
    return {method: tables[vector_set] for method, vector_set in sets.items() if vector_set in tables}


def read_accuracies(paths: Sequence[str | Path]) -> list[dict]:
    """The reward-model accuracy JSON files of a run."""
    return [json.loads(Path(p).read_text()) for p in paths]


def benchmark_seconds(run: Path) -> pd.DataFrame:
    """One row per Snakemake benchmark TSV under ``run/benchmarks``: ``stage`` (its rule), ``job`` (its path below
    the stage, e.g. ``seed1/mva/part0``) and wall-clock seconds ``s``; empty without benchmarks."""
    rows = []
    for path in sorted((run / "benchmarks").rglob("*.tsv")):
        parts = path.relative_to(run / "benchmarks").with_suffix("").parts
        rows.append({"stage": parts[0], "job": "/".join(parts[1:]), "s": float(pd.read_csv(path, sep="\t")["s"].sum())})
    return pd.DataFrame(rows, columns=["stage", "job", "s"])


def total_wall_seconds(benchmark_files: Sequence[str | Path]) -> float:
    """Sum of the wall-clock seconds of Snakemake benchmark TSVs."""
    return float(sum(pd.read_csv(p, sep="\t")["s"].sum() for p in benchmark_files))
