"""``summary.md``: the run's design, evaluator checks, and claims generated from the comparisons table alone.

Every claim line prints the paired estimate, its CI and the three-way verdict; no method is called best unless
its paired CI against the runner-up excludes 0; a claim that rests on an evaluator not distinguishable from
chance says that it is no evidence.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from mva_core.comparisons import ALL_WEIGHTINGS
from mva_core.decorrelation import MEASURES, uninformative_share
from mva_core.markdown import to_markdown
from mva_core.statistics import AT_CHANCE, SUPPORTED

PAPER_CLAIMS = {
    "soup": "decorrelated value vectors beat undecorrelated ones (soup, Fig. 2)",
    "ortho": "HSIC beats an orthogonality constraint (Fig. 4)",
    "modpo": "MVA beats MODPO (Fig. 2)",
    "expo": "MVA beats ExPO-style extrapolation (Fig. 2)",
    "single": "combining value vectors beats single value vectors (Fig. 5)",
}
HEADLINE = [("hypervolume", "", ""), ("weighted_reward", "", ALL_WEIGHTINGS)]


def _interval(row: Mapping) -> str:
    return f"{row['estimate']:+.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}] -> **{row['verdict']}**"


def context_lines(check: Mapping | None) -> list[str]:
    """What the evaluation-prompts job's context check (its provenance record's ``context_check``) skipped."""
    if not check:
        return []
    if check["positions"] is None:
        return ["Prompt lengths were not checked: the policy's config.json names no context length.", ""]
    budget = f"{check['positions']:,} positions, {check['max_new_tokens']:,} of them for the reply"
    skipped = sum(check["too_long"].values())
    if not skipped:
        return [f"Every evaluation prompt fits the policy's context ({budget}).", ""]
    origins = ", ".join(f"{origin} {n}" for origin, n in sorted(check["too_long"].items()))
    return [f"**{skipped} evaluation prompt(s) were skipped** as longer than the policy's context allows ({budget}): "
            f"{origins} (evaluation.on_long_prompt: drop; never truncated).", ""]


def evaluator_lines(rm_accuracy: Sequence[Mapping]) -> tuple[list[str], set[str]]:
    """The evaluator table, and the values whose evaluator is not distinguishable from chance."""
    table = pd.DataFrame([{"evaluator": (r.get("scorer") or {}).get("model", "?"),
                           **{k: r.get(k) for k in ("value", "accuracy", "n", "ci_low", "ci_high", "check")}}
                          for r in rm_accuracy])
    at_chance = set(table.loc[table["check"] == AT_CHANCE, "value"]) if len(table) else set()
    lines = ["## Evaluators (pairwise accuracy on held-out eval pairs, exact binomial CI)", "", to_markdown(table), ""]
    learned = sorted(table.loc[~table["evaluator"].astype(str).str.startswith("oracle:"), "value"]) if len(table) else []
    if learned:
        lines += [f"Values {learned} are judged by learned reward models: their judgements carry the models' own "
                  "errors (an oracle-scored value has none).", ""]
    if at_chance:
        lines += [f"Evaluators of {sorted(at_chance)} are not distinguishable from chance: comparisons on these "
                  "values (and hypervolumes, weighted rewards, which combine all values) are **not evidence**.", ""]
    return lines, at_chance


def design_lines(design: pd.DataFrame) -> list[str]:
    d = design.iloc[0]
    coverage = ("prompts and training seeds (two-stage cluster bootstrap)" if d["seeds_resampled"] else
                "prompt sampling only (one training seed: training randomness is not covered)")
    return ["## Design", "",
            f"{d['n_prompts']} evaluation prompts: {d['n_selection_prompts']} choose each method's point per weighting "
            f"({d['n_weightings']} weightings, per training seed) and {d['n_test_prompts']} report it. "
            f"{d['n_seeds']} training seed(s); {d['n_boot']} paired resamples; {d['ci']:.0%} intervals cover "
            f"{coverage}. Verdicts: *supported* / *contradicted* when the paired CI excludes 0 on the claimed / "
            "other side, else *inconclusive*.", ""]


def claim_lines(comparisons: pd.DataFrame, target: str, at_chance: set[str]) -> list[str]:
    """One line per (baseline, headline metric) and per (baseline, value) for mean reward and win rate."""
    if comparisons.empty:
        return []
    lines = []
    for other, part in comparisons.groupby("method_b", sort=False):
        claim = PAPER_CLAIMS.get(str(other), f"{target} beats {other}")
        lines.append(f"- {claim}:")
        keys = HEADLINE + [(m, v, ALL_WEIGHTINGS) for m in ("mean_reward", "win_rate") for v in part["value"].unique() if v]
        indexed = part.set_index(["metric", "value", "weighting"])
        for metric, value, weighting in keys:
            row = indexed.loc[(metric, value, weighting)]
            label = metric + (f" ({value})" if value else "") + (" averaged over weightings" if weighting else "")
            unsound = (value in at_chance) if value else bool(at_chance)
            lines.append(f"  - {label}: {_interval(row)}" + (" (evaluator at chance: not evidence)" if unsound else ""))
    n_rows = len(comparisons)
    n_supported = int((comparisons["verdict"] == SUPPORTED).sum())
    lines += ["", f"All {n_rows} rows are in `tables/comparisons.md` ({n_supported} supported). Each row is tested at "
              "its own level: with no true difference about 2.5% of rows read *supported* by chance."]
    return lines


def baseline_lines(comparisons: pd.DataFrame, at_chance: set[str]) -> list[str]:
    """Every method against each penalty-free baseline: hypervolume and the rows averaged over weightings."""
    if comparisons.empty:
        return []
    columns = ["method_a", "method_b", "metric", "value", "estimate", "ci_low", "ci_high", "verdict"]
    lines = ["## Each method against the penalty-free baselines (a − b, paired, test prompts, averaged over "
             "weightings)", "", to_markdown(comparisons[columns]), ""]
    if at_chance:
        lines += [f"(Evaluators of {sorted(at_chance)} are at chance: rows on them, hypervolume included, are not "
                  "evidence.)", ""]
    return lines


def leader_line(leader: pd.DataFrame) -> list[str]:
    if leader.empty:
        return []
    row = leader.iloc[0]
    if row["verdict"] == SUPPORTED:
        return [f"Largest held-out hypervolume: **{row['method_a']}**, ahead of {row['method_b']} by {_interval(row)}.", ""]
    return [f"No method has a distinguishably largest hypervolume: {row['method_a']} minus runner-up "
            f"{row['method_b']} is {_interval(row)}.", ""]


def effect_lines(efficacy: pd.DataFrame, interference: pd.DataFrame, at_chance: set[str]) -> list[str]:
    """Efficacy at λ = 1 (all λ in tables/efficacy.md) and the interference table."""
    lines = []
    if len(efficacy):
        at_one = efficacy[efficacy["lambda"] == 1.0]
        columns = ["method", "value", "estimate", "ci_low", "ci_high", "verdict", "spearman"]
        lines += ["## Efficacy: each value vector alone at λ = 1 against SFT, on its own value (test prompts)", "",
                  "`spearman`: rank correlation of λ (0 included) with the mean own reward along the vector's line; "
                  "every λ is in `tables/efficacy.md`.", "", to_markdown(at_one[columns]), ""]
        weak = sorted(set(at_one.loc[at_one["verdict"] != SUPPORTED, "value"]))
        if weak:
            lines += [f"Value vectors of {weak} do not measurably move their own value at λ = 1 in every method: "
                      "frontiers and comparisons on them show no trained effect.", ""]
        if at_chance:
            lines += [f"(Evaluators of {sorted(at_chance)} are at chance: their efficacy rows are not evidence.)", ""]
    if len(interference):
        lines += ["## Interference: adding value v's vector changes value u's reward (λ_u = λ_v = λ vs λ_u = λ alone)", "",
                  to_markdown(interference), ""]
    return lines


def decorrelation_lines(decorrelation: Mapping[str, pd.DataFrame]) -> list[str]:
    """Per method, value pair and measure: the mean over modules of the value and its anchors, and the share of
    modules where the value lies inside the independent-vector range (flagged uninformative from one half up)."""
    rows = []
    for method, table in decorrelation.items():
        for (a, b), part in table.groupby(["value_a", "value_b"]):
            for measure in MEASURES:
                inside = uninformative_share(part, measure)
                rows.append({"method": method, "pair": f"{a}/{b}", "measure": measure,
                             "value": part[measure].mean(), "self": part[f"{measure}_self"].mean(),
                             "independent": f"{part[f'{measure}_indep_lo'].mean():.4g} to "
                                            f"{part[f'{measure}_indep_hi'].mean():.4g}",
                             "modules inside independent range": f"{inside:.0%}",
                             "reading": "uninformative" if inside >= 0.5 else "informative"})
            rows.append({"method": method, "pair": f"{a}/{b}", "measure": "ΔW norm (a, b)",
                         "value": f"{part['norm_a'].mean():.4g}, {part['norm_b'].mean():.4g}"})
    if not rows:
        return []
    return ["## Measured dependence between value vectors (mean over LoRA modules; same estimators for every method)",
            "", "`self`: the measure of a vector with itself; `independent`: its range for 20 random vectors with the "
            "first vector's shapes and norms against the second (per module, averaged). A measure whose value lies "
            "inside that range on most modules cannot tell these vectors from unrelated ones: it is flagged "
            "uninformative, and a penalty built on it cannot be said to decorrelate.", "",
            to_markdown(pd.DataFrame(rows).fillna("")), ""]


def summary_markdown(run_name: str, tables, rm_accuracy: Sequence[Mapping], decorrelation: Mapping[str, pd.DataFrame],
                     wall_seconds: float | None, target: str = "mva", context_check: Mapping | None = None) -> str:
    """The key numbers of a run as Markdown (results/<run>/summary.md); ``tables`` is an ``EvaluationTables``,
    ``context_check`` the evaluation prompts' record of prompts too long for the policy (``context_lines``)."""
    lines = [f"# MVA run `{run_name}`", ""]
    if wall_seconds is not None:
        lines += [f"Total job time (sum of Snakemake benchmark wall clocks): {wall_seconds / 60:.1f} min", ""]
    lines += design_lines(tables.design)
    lines += context_lines(context_check)
    evaluators, at_chance = evaluator_lines(rm_accuracy)
    lines += evaluators
    hv = tables.frontiers[["method", "n_points", "n_selected", "hypervolume", "hv_ci_low", "hv_ci_high"]]
    lines += ["## Hypervolume of each method's held-out selected points (test prompts)", "", to_markdown(hv), ""]
    lines += leader_line(tables.leader)
    claims = claim_lines(tables.comparisons, target, at_chance)
    if claims:
        lines += [f"## Claims: {target} against each other method (paired, test prompts)", "", *claims, ""]
    lines += baseline_lines(tables.baseline_comparisons, at_chance)
    seeds = tables.seed_hypervolumes
    if seeds["seed"].nunique() > 2:
        across = seeds[seeds["seed"] == "all"]
        lines += ["## Hypervolume across training seeds (description: mean, t-interval)", "",
                  to_markdown(across[["method", "n_seeds", "hypervolume", "ci_low", "ci_high"]]), ""]
    lines += effect_lines(tables.efficacy, tables.interference, at_chance)
    lines += decorrelation_lines(decorrelation)
    return "\n".join(lines)
