"""``summary.md``: the run's design, evaluator checks, and claims generated from the tables alone.

Every claim line prints the paired estimate, its CI and the Holm-adjusted verdict (with the unadjusted one where
they differ, and the row's minimum detectable effect where it is inconclusive); the pre-specified rows
(``evaluation.primary_rows``) come first; the target is called the hypervolume leader only when its paired
difference with every other method is supported after Holm's adjustment; a claim that rests on an evaluator not
better than chance (at chance, or inverted) says that it is no evidence.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pandas as pd

from mva_core.comparisons import ALL_WEIGHTINGS
from mva_core.contracts import COMPARISONS, EFFICACY, HYPERVOLUMES, INTERFERENCE, validate_table
from mva_core.decorrelation import MEASURES, measure_reading
from mva_core.markdown import to_markdown
from mva_core.statistics import (
    BETTER_THAN_CHANCE,
    CONTRADICTED,
    EQUIVALENT,
    INCONCLUSIVE,
    SUPPORTED,
    WORSE_THAN_CHANCE,
)

PAPER_CLAIMS = {
    "soup": "decorrelated value vectors beat undecorrelated ones (soup, Fig. 2)",
    "ortho": "HSIC beats an orthogonality constraint (Fig. 4)",
    "modpo": "MVA beats MODPO (Fig. 2)",
    "expo": "MVA beats ExPO-style extrapolation (Fig. 2)",
    "single": "combining value vectors beats single value vectors (Fig. 5)",
}
HEADLINE = [("hypervolume", "", ""), ("weighted_reward", "", ALL_WEIGHTINGS)]


EFFECT_SUMMARY_COLUMNS = ["estimate", "ci_low", "ci_high", "mde", "p_value", "verdict", "verdict_holm"]


def _interval(row: Mapping) -> str:
    """``estimate [low, high] -> **verdict_holm**`` with the unadjusted verdict where it differs and the mde where
    the row is inconclusive."""
    text = f"{row['estimate']:+.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}] -> **{row['verdict_holm']}**"
    notes = [f"unadjusted: {row['verdict']}"] if row["verdict"] != row["verdict_holm"] else []
    if row["verdict_holm"] == INCONCLUSIVE:
        notes.append(f"mde {row['mde']:.3g}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


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


def _unsound_note(values: Sequence[str], unsound: Mapping[str, str]) -> str:
    """The note for a claim on ``values`` ("" for all of them) when an evaluator it rests on is not evidence."""
    involved = sorted(unsound) if not any(values) else sorted(v for v in values if v in unsound)
    if not involved:
        return ""
    return " (evaluator " + ", ".join(f"of {v} {unsound[v]}" for v in involved) + ": not evidence)"


def evaluator_lines(rm_accuracy: Sequence[Mapping], values: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The evaluator table, and the values whose evaluator is not evidence: value -> 'at chance', 'inverted' or
    'unchecked' (no check on record: an archive copied before the run made it)."""
    table = pd.DataFrame([{"evaluator": (r.get("scorer") or {}).get("model", "?"),
                           **{k: r.get(k) for k in ("value", "accuracy", "n", "ci_low", "ci_high", "check")}}
                          for r in rm_accuracy])
    unsound = ({value: "inverted" if check == WORSE_THAN_CHANCE else "at chance"
                for value, check in zip(table["value"], table["check"]) if check != BETTER_THAN_CHANCE}
               if len(table) else {})
    unchecked = [v for v in values if not len(table) or v not in set(table["value"])]
    unsound.update({value: "unchecked" for value in unchecked})
    lines = ["## Evaluators (pairwise accuracy on held-out eval pairs, exact binomial CI)", ""]
    lines += [to_markdown(table), ""] if len(table) else []
    if unchecked:
        lines += [f"No evaluator check is on record for {unchecked} (`reward_models/accuracy_<value>.json`): "
                  "comparisons on these values (and hypervolumes, weighted rewards) are **not evidence** until "
                  "their evaluator is shown better than chance.", ""]
    learned = sorted(table.loc[~table["evaluator"].astype(str).str.startswith("oracle:"), "value"]) if len(table) else []
    if learned:
        lines += [f"Values {learned} are judged by learned reward models: their judgements carry the models' own "
                  "errors (an oracle-scored value has none).", ""]
    at_chance = sorted(v for v, kind in unsound.items() if kind == "at chance")
    inverted = sorted(v for v, kind in unsound.items() if kind == "inverted")
    if at_chance:
        lines += [f"Evaluators of {at_chance} are not distinguishable from chance: comparisons on these "
                  "values (and hypervolumes, weighted rewards, which combine all values) are **not evidence**.", ""]
    if inverted:
        lines += [f"Evaluators of {inverted} are worse than chance: they rank answers backwards (the whole accuracy "
                  "interval is below 0.5), so comparisons on these values (and hypervolumes, weighted rewards) are "
                  "**not evidence** and may point the wrong way.", ""]
    return lines, unsound


def design_lines(design: pd.DataFrame) -> list[str]:
    d = design.iloc[0]
    coverage = ("prompts and training seeds (Student t on the crossed seed × prompt variance components)"
                if d["seeds_resampled"] else
                "prompt sampling only (one training seed: training randomness is not covered)")
    margins = d.get("equivalence_margins", "{}")
    return ["## Design", "",
            f"{d['n_prompts']} evaluation prompts: {d['n_selection_prompts']} choose each method's point per weighting "
            f"({d['n_weightings']} weightings, per training seed) and {d['n_test_prompts']} report it. "
            f"{d['n_seeds']} training seed(s); {d['n_boot']} paired resamples; {d['ci']:.0%} intervals cover "
            f"{coverage}. Verdicts: *supported* / *contradicted* when the paired CI excludes 0 on the claimed / "
            f"other side, else *equivalent* when the {2 * d['ci'] - 1:.0%} interval lies inside the row's "
            f"equivalence margin (`evaluation.equivalence_margins`: {margins}; none: never equivalent), else "
            "*inconclusive* (`mde`: the smallest true difference the row had 80% power to detect). Claims below read "
            "`verdict_holm`: Holm-adjusted within the row's family (table and metric), so that a family makes no "
            f"false claim with probability at least {d['ci']:.0%}.", "", *scale_lines(design)]


def scale_lines(design: pd.DataFrame) -> list[str]:
    """The values' scales: selection, weighted rewards and hypervolumes use rewards divided by them."""
    d = design.iloc[0]
    scales = {str(c)[len("scale_"):]: d[c] for c in design.columns if str(c).startswith("scale_") and c != "scale_basis"}
    if not scales:
        return []
    listed = ", ".join(f"{value} {scale:.4g}" for value, scale in scales.items())
    return [f"Values are weighted on standardised rewards (reward / scale; scales from the selection prompts, the same "
            f"for every method): {listed} (basis: {d['scale_basis']}; `sft` = the standard deviation of the SFT model's "
            "per-prompt reward, pooled over seeds). Selection, `weighted_reward` and the hypervolume rows "
            "(`hypervolume_std`) use them; `mean_reward` rows stay in each value's own units.", ""]


def _label(row: Mapping, table: str) -> str:
    """What a row of ``table`` measures, in words."""
    if table in ("comparisons", "baseline_comparisons"):
        label = (f"{row['method_a']} − {row['method_b']}: " if table == "baseline_comparisons" else "") + row["metric"]
        label += f" ({row['value']})" if row["value"] else ""
        return label + (" averaged over weightings" if row["weighting"] == ALL_WEIGHTINGS else
                        f" at {row['weighting']}" if row["weighting"] else "")
    if table == "efficacy":
        return f"efficacy of {row['method']}'s {row['value']} vector at λ = {row['lambda']:g}"
    return f"interference {row['method']}: adding {row['value_v']} to {row['value_u']} at λ = {row['lambda']:g}"


def _row_values(row: Mapping, table: str) -> list[str]:
    """The values a row's claim rests on ("" = all of them)."""
    if table == "efficacy":
        return [row["value"]]
    if table == "interference":
        return [row["value_u"], row["value_v"]]
    return [row["value"]]


def primary_lines(tables, primary_rows: Sequence[Mapping], unsound: Mapping[str, str]) -> list[str]:
    """The pre-specified claims (``primary`` rows of every table) read with their Holm-adjusted verdicts."""
    if not primary_rows:
        return []
    lines = ["## Primary claims (pre-specified in `evaluation.primary_rows`)", ""]
    for name in ("comparisons", "baseline_comparisons", "efficacy", "interference"):
        table = getattr(tables, name)
        if table.empty or "primary" not in table:
            continue
        for _, row in table[table["primary"]].iterrows():
            lines.append(f"- {_label(row, name)}: {_interval(row)}{_unsound_note(_row_values(row, name), unsound)}")
    if len(lines) == 2:
        lines.append("No row of this run matches them.")
    lines += ["", f"Selectors: `{json.dumps(list(primary_rows))}`.", ""]
    return lines


def claim_lines(comparisons: pd.DataFrame, target: str, unsound: Mapping[str, str]) -> list[str]:
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
            primary = " (primary)" if row.get("primary", False) else ""
            lines.append(f"  - {label}{primary}: {_interval(row)}{_unsound_note([value], unsound)}")
    n_rows = len(comparisons)
    n_supported = int((comparisons["verdict"] == SUPPORTED).sum())
    n_holm = int((comparisons["verdict_holm"] == SUPPORTED).sum())
    lines += ["", f"All {n_rows} rows are in `tables/comparisons.md` ({n_supported} supported at their own level, "
              f"{n_holm} after Holm's adjustment within their family; families: "
              f"{', '.join(comparisons['family'].unique())})."]
    return lines


def baseline_lines(comparisons: pd.DataFrame, unsound: Mapping[str, str]) -> list[str]:
    """Every method against each penalty-free baseline: hypervolume and the rows averaged over weightings."""
    if comparisons.empty:
        return []
    columns = ["method_a", "method_b", "metric", "value", *EFFECT_SUMMARY_COLUMNS]
    lines = ["## Each method against the penalty-free baselines (a − b, paired, test prompts, averaged over "
             "weightings)", "", to_markdown(comparisons[columns]), ""]
    if unsound:
        lines += [f"(Evaluators of {sorted(unsound)} are not shown better than chance: rows on them, hypervolume included, "
                  "are not evidence.)", ""]
    return lines


def leader_line(leader: pd.DataFrame, unsound: Mapping[str, str]) -> list[str]:
    """Whether the target has the largest hypervolume: its paired difference with each other method, Holm-adjusted
    within that family (no post-selection: the target is fixed before the run)."""
    if leader.empty:
        return []
    target = leader["method_a"].iloc[0]
    readings = "; ".join(f"{target} − {row['method_b']}: {_interval(row)}" for _, row in leader.iterrows())
    note = _unsound_note([""], unsound)
    if (leader["verdict_holm"] == SUPPORTED).all():
        return [f"Largest held-out hypervolume: **{target}**, ahead of every other method (Holm-adjusted): "
                f"{readings}{note}.", ""]
    larger = leader.loc[leader["verdict_holm"] == CONTRADICTED, "method_b"].tolist()
    if larger:
        return [f"{target}'s held-out hypervolume is smaller than that of {larger}: {readings}{note}.", ""]
    return [f"{target} is not shown to have the largest held-out hypervolume: {readings}{note}.", ""]


def effect_lines(efficacy: pd.DataFrame, interference: pd.DataFrame, unsound: Mapping[str, str]) -> list[str]:
    """Efficacy at λ = 1 (all λ in tables/efficacy.md) and the interference table."""
    lines = []
    if len(efficacy):
        at_one = efficacy[efficacy["lambda"] == 1.0]
        columns = ["method", "value", *EFFECT_SUMMARY_COLUMNS, "spearman"]
        lines += ["## Efficacy: each value vector alone at λ = 1 against SFT, on its own value (every evaluation "
                  "prompt)", "",
                  "`spearman`: rank correlation of λ (0 included) with the mean own reward along the vector's line; "
                  "every λ is in `tables/efficacy.md`.", "", to_markdown(at_one[columns]), ""]
        readings = {EQUIVALENT: "moves its value by less than the equivalence margin",
                    INCONCLUSIVE: "is not shown to move its value either way",
                    CONTRADICTED: "moves its value the wrong way"}
        weak = [f"{row['method']}'s {row['value']} vector {readings[row['verdict_holm']]} "
                f"({_interval(row)})" for _, row in at_one.iterrows() if row["verdict_holm"] in readings]
        if weak:
            lines += ["At λ = 1, after Holm's adjustment: " + "; ".join(weak) + ". Frontiers and comparisons on such "
                      "a value cannot show a trained effect.", ""]
        if unsound:
            lines += [f"(Evaluators of {sorted(unsound)} are not shown better than chance: their efficacy rows are not "
                      "evidence.)", ""]
    if len(interference):
        columns = ["method", "value_u", "value_v", "lambda", "claim", *EFFECT_SUMMARY_COLUMNS]
        lines += ["## Interference: adding value v's vector changes value u's reward (λ_u = λ_v = λ vs λ_u = λ alone)", "",
                  "Every evaluation prompt, except the matched-efficacy rows (λ_v chosen per training seed on the "
                  "selection prompts, reported on the test prompts; `matched_gap`: the v efficacy gap the match "
                  "leaves).", "", to_markdown(interference[[*columns, "matched_gap"]]), ""]
    return lines


def decorrelation_lines(decorrelation: Mapping[str, pd.DataFrame]) -> list[str]:
    """Per method, value pair and measure: the mean over modules of the value and its anchors, the share of modules
    where the measure discriminates, where the value lies against the independent range, and the reading
    (``decorrelation.measure_reading``)."""
    rows = []
    for method, table in decorrelation.items():
        for (a, b), part in table.groupby(["value_a", "value_b"]):
            for measure in MEASURES:
                read = measure_reading(part, measure)
                rows.append({"method": method, "pair": f"{a}/{b}", "measure": measure,
                             "value": part[measure].mean(), "self": part[f"{measure}_self"].mean(),
                             "independent": f"{part[f'{measure}_indep_lo'].mean():.4g} to "
                                            f"{part[f'{measure}_indep_hi'].mean():.4g}",
                             "discriminates": f"{read['discriminates']:.0%}",
                             "above / inside / below": f"{read['above']:.0%} / {read['inside']:.0%} / {read['below']:.0%}",
                             "reading": read["reading"]})
            rows.append({"method": method, "pair": f"{a}/{b}", "measure": "ΔW norm (a, b)",
                         "value": f"{part['norm_a'].mean():.4g}, {part['norm_b'].mean():.4g}"})
    if not rows:
        return []
    return ["## Measured dependence between value vectors (mean over LoRA modules; same estimators for every method)",
            "", "`self`: the first vector against itself rescaled to the second's norms; `independent`: the range for "
            "20 random vectors with the first vector's shapes and norms against the second (per module, averaged). "
            "`discriminates`: share of modules where the self anchor lies outside the independent range (and, for "
            "RBF kernels, neither kernel collapsed), so the measure can tell dependent vectors from independent ones. "
            "`reading`: where the value lies on most of those modules: *above* the independent range (more "
            "dependent than unrelated vectors), *inside* (these vectors look independent), *below* (or *mixed*); "
            "*uninformative* where the measure discriminates on fewer than half of the modules: it cannot say "
            "whether these vectors are dependent, and a penalty built on it cannot be said to decorrelate.", "",
            to_markdown(pd.DataFrame(rows).fillna("")), ""]


def summary_markdown(run_name: str, tables, rm_accuracy: Sequence[Mapping], decorrelation: Mapping[str, pd.DataFrame],
                     wall_seconds: float | None, target: str = "mva", context_check: Mapping | None = None) -> str:
    """The key numbers of a run as Markdown (results/<run>/summary.md); ``tables`` is an ``EvaluationTables``,
    ``context_check`` the evaluation prompts' record of prompts too long for the policy (``context_lines``)."""
    for table, contract in ((tables.comparisons, COMPARISONS), (tables.baseline_comparisons, COMPARISONS),
                            (tables.efficacy, EFFICACY), (tables.interference, INTERFERENCE)):
        if len(table):
            validate_table(table, contract)
    lines = [f"# MVA run `{run_name}`", ""]
    if wall_seconds is not None:
        lines += [f"Total job time (sum of Snakemake benchmark wall clocks): {wall_seconds / 60:.1f} min", ""]
    lines += design_lines(tables.design)
    lines += context_lines(context_check)
    evaluators, unsound = evaluator_lines(rm_accuracy, list(dict.fromkeys(tables.means["value"])))
    lines += evaluators
    lines += primary_lines(tables, json.loads(tables.design.iloc[0].get("primary_rows", "[]")), unsound)
    columns = ["method", "n_points", "n_selected", "n_selected_per_seed", "n_hull_vertices", "n_hull_reachable",
               "hypervolume_std", "hv_std_ci_low", "hv_std_ci_high", "hypervolume", "hv_ci_low", "hv_ci_high", "hv_df"]
    hv = validate_table(tables.frontiers, HYPERVOLUMES)[columns]
    lines += ["## Hypervolume of each method's held-out selected points (test prompts)", "",
              "`n_selected`: distinct selected points over seeds and weightings (`n_selected_per_seed`: per training "
              "seed); `n_hull_vertices`: points on the convex hull of the method's frontier (selection prompts), "
              "`n_hull_reachable`: those the weightings can select. `hypervolume_std` on standardised rewards, "
              "`hypervolume` in raw reward units (their product); `hv_df`: the interval's degrees of freedom.", "",
              to_markdown(hv), ""]
    lines += leader_line(tables.leader, unsound)
    claims = claim_lines(tables.comparisons, target, unsound)
    if claims:
        lines += [f"## Claims: {target} against each other method (paired, test prompts)", "", *claims, ""]
    lines += baseline_lines(tables.baseline_comparisons, unsound)
    seeds = tables.seed_hypervolumes
    if seeds["seed"].nunique() > 2:
        across = seeds[seeds["seed"] == "all"]
        lines += ["## Hypervolume across training seeds (description: mean, t-interval)", "",
                  to_markdown(across[["method", "n_seeds", "hypervolume", "ci_low", "ci_high"]]), ""]
    lines += effect_lines(tables.efficacy, tables.interference, unsound)
    lines += decorrelation_lines(decorrelation)
    return "\n".join(lines)
