"""Paired comparisons of methods on held-out selected points: estimates, cluster-bootstrap CIs and verdicts.

Input per method: the test-prompt rewards of its selected points, ``x[seed, weighting, value, prompt]`` (see
``mva_core.selection``). A method's reward under weighting w is the mean over seeds and test prompts; its
hypervolume is that of its per-weighting rewards against a reference point (SFT's rewards, recomputed in each
resample). Differences between methods are paired prompt by prompt (and inside each shared resample); every row is
judged by ``mva_core.statistics``. Statistics that combine values (``weighted_reward``, ``hypervolume``) are computed
on standardised rewards (each value's rewards divided by its scale, ``selection.value_scales``); ``mean_reward`` rows
are in the value's own units, ``win_rate`` rows are shares.

The comparisons table has one row per (other method, metric, value, weighting), the claimed direction always
"target better": ``estimate`` is target − other (win rates: rate − 0.5) and ``verdict`` says whether the CI
excludes 0 on the claimed side (supported), the other (contradicted), lies within the value's equivalence margin
(equivalent) or none of these (inconclusive); ``verdict_holm`` is the same after Holm's adjustment within the row's
``family`` (table and metric; per-weighting rows apart from the headline rows). Weighting ``all`` is the average
over the selection weightings; an empty value or weighting means "not applicable".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mva_core.frontier import hypervolumes, reference_from_means
from mva_core.selection import weighting_label
from mva_core.statistics import (
    ClusterResamples,
    Estimate,
    judge,
    linearised,
    win_credit,
    win_rate_seed_floor,
    with_holm,
)

COMPARISON_COLUMNS = ["method_a", "method_b", "metric", "value", "weighting", "estimate", "ci_low", "ci_high",
                      "n_prompts", "n_seeds", "verdict", "df", "se", "mde", "p_value", "equivalence_margin",
                      "p_equivalence", "family", "verdict_holm"]
ALL_WEIGHTINGS = "all"
HYPERVOLUME = "hypervolume"


@dataclass(frozen=True)
class MethodRewards:
    """One method's mean rewards per (weighting, value), full sample and resampled."""

    rewards: Estimate  # value (W, V), boot (B, W, V)

    def weighted(self, weights: np.ndarray) -> Estimate:
        """Σ_v w_v·R_v per weighting: value (W,), boot (B, W), samples (seeds, W, prompts)."""
        return Estimate((self.rewards.value * weights).sum(-1), (self.rewards.boot * weights).sum(-1),
                        np.einsum("swvp,wv->swp", self.rewards.samples, weights))

    def hypervolume(self, reference: Estimate, scales: np.ndarray) -> Estimate:
        """Hypervolume of the per-weighting reward vectors against ``reference`` (value (V,), boot (B, V): each
        resample has its own), rewards and reference divided by ``scales``: value (), boot (B,); no samples (see ``linearised``)."""
        return Estimate(hypervolumes(self.rewards.value[None] / scales, reference.value / scales)[0],
                        hypervolumes(self.rewards.boot / scales, reference.boot / scales))


def method_rewards(x: np.ndarray, resamples: ClusterResamples) -> MethodRewards:
    """Means of ``x[seed, weighting, value, prompt]`` over seeds and prompts, and their resamples."""
    return MethodRewards(resamples.estimate(x))


def hypervolume_reference(rewards: np.ndarray, is_sft: np.ndarray, how: str | Sequence[float],
                          resamples: ClusterResamples) -> Estimate:
    """The hypervolume's reference point in the full sample and in each resample, from the test rewards of every
    point ``rewards[seed, point, value, prompt]`` (``is_sft`` marks the SFT points): ``"sft"`` and ``"min"``
    (``frontier.reference_from_means``) are recomputed inside each resample from the same resampled answers as the
    points they measure, so a prompt effect every point shares moves the reference with them (paired); explicit
    numbers (one per value, in the rewards' order) stay fixed. A recomputed reference carries ``samples``
    (seeds, values, prompts), its linear part in the per-prompt rewards: the SFT points' mean, or the lowest point's
    rewards (``Comparator.linearised_hypervolume``)."""
    if not isinstance(how, str):
        return fixed_reference(how, resamples.n_boot)
    means = rewards.mean(axis=(0, -1))  # (points, values)
    value = reference_from_means(means, how, is_sft)
    if how == "sft":
        samples = rewards[:, np.asarray(is_sft, dtype=bool)].mean(axis=1)
    else:
        samples = rewards[:, means.argmin(axis=0), np.arange(means.shape[1])]
    return Estimate(value, reference_from_means(resamples.means(rewards), how, is_sft), samples)


def fixed_reference(point: Sequence[float], n_boot: int) -> Estimate:
    """A reference point that is the same in every one of ``n_boot`` resamples."""
    fixed = np.asarray(point, dtype=float)
    return Estimate(fixed, np.broadcast_to(fixed, (n_boot, len(fixed))))


def _with_average(estimate: Estimate) -> Estimate:
    """Append the mean over weightings (first axis of the value, second of boot and samples) as a last weighting."""
    def appended(x: np.ndarray, axis: int) -> np.ndarray:
        return np.concatenate([x, x.mean(axis=axis, keepdims=True)], axis=axis)
    return Estimate(appended(estimate.value, 0), appended(estimate.boot, 1), appended(estimate.samples, 1))


def family(table: str, metric: str, weighting: str) -> str:
    """The Holm family of a comparison row: its table and metric, the per-weighting rows apart from the headline
    rows (no weighting, or the average over weightings)."""
    return f"{table}: {metric}" + ("" if weighting in ("", ALL_WEIGHTINGS) else " per weighting")


class Comparator:
    """Everything needed to compare methods of one run: selected test rewards, weightings, reference, resamples, the
    values' scales (``selection.value_scales``; default 1) and equivalence ``margins`` (per value name in its reward's
    units; ``hypervolume`` in standardised units).

    ``reference`` is a fixed point (one number per value) or an ``Estimate`` with one per resample
    (``hypervolume_reference``)."""

    def __init__(self, selected: Mapping[str, np.ndarray], weightings: Sequence[Mapping[str, float]],
                 values: Sequence[str], reference: Sequence[float] | Estimate, resamples: ClusterResamples,
                 ci: float = 0.95, tie_tol: float = 0.0, scales: Sequence[float] | None = None,
                 margins: Mapping[str, float] | None = None):
        self.selected, self.values, self.resamples, self.ci, self.tie_tol = dict(selected), list(values), resamples, ci, tie_tol
        self.scales = np.ones(len(self.values)) if scales is None else np.asarray(scales, dtype=float)
        self.margins = dict(margins or {})  # equivalence margin per value name (and of the standardised hypervolume)
        self.weights = np.array([[w.get(v, 0.0) for v in self.values] for w in weightings], dtype=float)
        self.labels = [weighting_label(w) for w in weightings] + [ALL_WEIGHTINGS]
        self.reference = reference if isinstance(reference, Estimate) else fixed_reference(reference, resamples.n_boot)
        self.rewards = {m: method_rewards(x, resamples) for m, x in self.selected.items()}
        self._hypervolumes: dict[str, Estimate] = {}
        self._win_rates: dict[tuple[str, str], tuple[Estimate, np.ndarray, np.ndarray]] = {}
        first = next(iter(self.selected.values()))
        self.n_seeds, self.n_prompts = first.shape[0], first.shape[-1]

    def hypervolume(self, method: str) -> Estimate:
        """A method's hypervolume over all resamples (computed once; used by comparisons and table)."""
        if method not in self._hypervolumes:
            self._hypervolumes[method] = self.rewards[method].hypervolume(self.reference, self.scales)
        return self._hypervolumes[method]

    @property
    def hypervolume_unit(self) -> float:
        """One standardised unit of hypervolume in raw reward units (the product of the scales)."""
        return float(np.prod(self.scales))

    def linearised_hypervolume(self, statistic: Estimate, *methods: str) -> Estimate:
        """``statistic`` (a hypervolume of ``methods``, or a difference of two) with its linear part in those methods'
        per-prompt rewards and, where it is recomputed in each resample, the reference point's."""
        inputs = [self.rewards[m].rewards for m in methods]
        if self.reference.samples is not None:
            inputs.append(self.reference)
        return linearised(statistic, inputs, self.ci)

    def hypervolume_difference(self, a: str, b: str) -> Estimate:
        """Hypervolume of a minus that of b (standardised), with its linear part (``linearised_hypervolume``)."""
        return self.linearised_hypervolume(self.hypervolume(a) - self.hypervolume(b), a, b)

    def seed_hypervolume(self, method: str, seed_index: int) -> float:
        """Hypervolume (standardised) of one training seed's selected points (means over the test prompts), against
        the full-sample reference."""
        means = self.selected[method][seed_index].mean(axis=-1)
        return float(hypervolumes(means[None] / self.scales, self.reference.value / self.scales)[0])

    def win_rates(self, a: str, b: str) -> tuple[Estimate, np.ndarray, np.ndarray]:
        """Win rate of a against b per (weighting, value) with 'all' appended, the raw credits, and each rate's
        least seed variance (``win_rate_seed_floor``) (computed once per pair; used by the comparisons and the
        win-rate table)."""
        if (a, b) not in self._win_rates:
            credit = win_credit(self.selected[a], self.selected[b], self.tie_tol)
            differences = self.selected[a] - self.selected[b]
            differences = np.concatenate([differences, differences.mean(axis=1, keepdims=True)], axis=1)  # 'all'
            floors = np.array([[win_rate_seed_floor(differences[:, w, v]) for v in range(len(self.values))]
                               for w in range(len(self.labels))])
            self._win_rates[(a, b)] = (_with_average(method_rewards(credit, self.resamples).rewards), credit, floors)
        return self._win_rates[(a, b)]

    def _row(self, a: str, b: str, metric: str, value: str, weighting: str, estimate: Estimate,
             margin: float | None = None, seed_floor: float = 0.0) -> dict:
        return {"method_a": a, "method_b": b, "metric": metric, "value": value, "weighting": weighting,
                "n_prompts": self.n_prompts, "n_seeds": self.n_seeds,
                **judge(estimate, self.ci, margin=margin, seed_floor=seed_floor)}

    def compare(self, a: str, b: str) -> list[dict]:
        """Rows of the comparisons table for target ``a`` against ``b`` (without family and Holm verdict)."""
        rows = [self._row(a, b, HYPERVOLUME, "", "", self.hypervolume_difference(a, b), self.margins.get(HYPERVOLUME))]
        standardised = self.weights / self.scales
        weighted = _with_average(self.rewards[a].weighted(standardised) - self.rewards[b].weighted(standardised))
        for w, label in enumerate(self.labels):
            rows.append(self._row(a, b, "weighted_reward", "", label, weighted.at(w)))
        mean = _with_average(self.rewards[a].rewards - self.rewards[b].rewards)
        wins, _, floors = self.win_rates(a, b)
        for v, value in enumerate(self.values):
            for w, label in enumerate(self.labels):
                rows.append(self._row(a, b, "mean_reward", value, label, mean.at(w, v), self.margins.get(value)))
        for v, value in enumerate(self.values):
            for w, label in enumerate(self.labels):
                rows.append(self._row(a, b, "win_rate", value, label, wins.at(w, v) - 0.5, seed_floor=floors[w, v]))
        return rows

    def _table(self, rows: list[dict], name: str) -> pd.DataFrame:
        """Rows as the table ``name``, with each row's family and Holm-adjusted verdict."""
        table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("family", "verdict_holm")])
        table["family"] = [family(name, m, w) for m, w in zip(table["metric"], table["weighting"])]
        return with_holm(table, self.ci)[COMPARISON_COLUMNS]

    def comparisons(self, target: str) -> pd.DataFrame:
        """The comparisons table of ``target`` against every other method."""
        if target not in self.selected:
            raise ValueError(f"win_rate_target {target!r} is not among the evaluated methods {list(self.selected)}")
        rows = [row for other in self.selected if other != target for row in self.compare(target, other)]
        return self._table(rows, "comparisons")

    def against_baselines(self, baselines: Sequence[str]) -> pd.DataFrame:
        """Every method against each penalty-free baseline: the comparisons table's hypervolume rows and its rows
        averaged over weightings (``all``), method a being the method and b the baseline."""
        rows = [row for b in baselines if b in self.selected for a in self.selected if a != b
                for row in self.compare(a, b) if row["weighting"] in ("", ALL_WEIGHTINGS)]
        return self._table(rows, "baseline_comparisons")

    def win_rate_table(self, target: str, weightings: Sequence[str]) -> pd.DataFrame:
        """Win/tie/loss counts over (seed, test prompt) and win rate with CI, for the given weighting labels."""
        rows = []
        for other in self.selected:
            if other == target:
                continue
            est, credit, floors = self.win_rates(target, other)
            for label in weightings:
                w = self.labels.index(label)
                for v, value in enumerate(self.values):
                    cells = credit[:, w, v] if label != ALL_WEIGHTINGS else credit[:, :, v]
                    judged = judge(est.at(w, v), self.ci, null=0.5, seed_floor=floors[w, v])
                    rows.append({"weighting": label, "target": target, "baseline": other, "value": value,
                                 "wins": int((cells == 1).sum()), "ties": int((cells == 0.5).sum()),
                                 "losses": int((cells == 0).sum()), "n": int(cells.size),
                                 "win_rate": judged.pop("estimate"), **judged})
        return pd.DataFrame(rows)

    def hypervolume_table(self) -> pd.DataFrame:
        """Per method: hypervolume of its selected points on the test prompts, with CI, in raw reward units
        (``hypervolume``, ``hv_ci_*``) and standardised (``hypervolume_std``, ``hv_std_ci_*``; raw / the product of
        the scales)."""
        rows = []
        for method in self.selected:
            judged = judge(self.linearised_hypervolume(self.hypervolume(method), method), self.ci)
            unit = self.hypervolume_unit
            rows.append({"method": method, "hypervolume": judged["estimate"] * unit, "hv_ci_low": judged["ci_low"] * unit,
                         "hv_ci_high": judged["ci_high"] * unit, "hypervolume_std": judged["estimate"],
                         "hv_std_ci_low": judged["ci_low"], "hv_std_ci_high": judged["ci_high"], "hv_df": judged["df"]})
        return pd.DataFrame(rows)
