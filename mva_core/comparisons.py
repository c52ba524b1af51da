"""Paired comparisons of methods on held-out selected points: estimates, cluster-bootstrap CIs and verdicts.

Input per method: the test-prompt rewards of its selected points, ``x[seed, weighting, value, prompt]`` (see
``mva_core.selection``). A method's reward under weighting w is the mean over seeds and test prompts; its
hypervolume is that of its per-weighting rewards against a reference point (SFT's rewards, recomputed in each
resample). Every statistic is computed in each shared resample (``mva_core.statistics``), so differences between
methods are paired. Statistics that combine values (``weighted_reward``, ``hypervolume``) are computed on
standardised rewards (each value's rewards divided by its scale, ``selection.value_scales``); ``mean_reward`` rows
are in the value's own units, ``win_rate`` rows are shares.

The comparisons table has one row per (other method, metric, value, weighting), the claimed direction always
"target better": ``estimate`` is target − other (win rates: rate − 0.5) and ``verdict`` says whether the CI
excludes 0 on the claimed side (supported), the other (contradicted) or neither (inconclusive). Weighting
``all`` is the average over the selection weightings; an empty value or weighting means "not applicable".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mva_core.frontier import hypervolumes, reference_from_means
from mva_core.selection import weighting_label
from mva_core.statistics import ClusterResamples, Estimate, judge, percentile_interval, win_credit

COMPARISON_COLUMNS = ["method_a", "method_b", "metric", "value", "weighting", "estimate", "ci_low", "ci_high",
                      "n_prompts", "n_seeds", "verdict"]
ALL_WEIGHTINGS = "all"


@dataclass(frozen=True)
class MethodRewards:
    """One method's mean rewards per (weighting, value), full sample and resampled."""

    rewards: Estimate  # value (W, V), boot (B, W, V)

    def weighted(self, weights: np.ndarray) -> Estimate:
        """Σ_v w_v·R_v per weighting: value (W,), boot (B, W)."""
        return Estimate((self.rewards.value * weights).sum(-1), (self.rewards.boot * weights).sum(-1))

    def hypervolume(self, reference: Estimate, scales: np.ndarray) -> Estimate:
        """Hypervolume of the per-weighting reward vectors against ``reference`` (value (V,), boot (B, V): each
        resample has its own), rewards and reference divided by ``scales``: value (), boot (B,)."""
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
    numbers (one per value, in the rewards' order) stay fixed."""
    if isinstance(how, str):
        return Estimate(reference_from_means(rewards.mean(axis=(0, -1)), how, is_sft),
                        reference_from_means(resamples.means(rewards), how, is_sft))
    return fixed_reference(how, resamples.n_boot)


def fixed_reference(point: Sequence[float], n_boot: int) -> Estimate:
    """A reference point that is the same in every one of ``n_boot`` resamples."""
    fixed = np.asarray(point, dtype=float)
    return Estimate(fixed, np.broadcast_to(fixed, (n_boot, len(fixed))))


def _with_average(estimate: Estimate, axis: int = 0) -> Estimate:
    """Append the mean over weightings (axis ``axis`` of the value, axis+1 of boot) as a last weighting."""
    value = np.concatenate([estimate.value, estimate.value.mean(axis=axis, keepdims=True)], axis=axis)
    boot = np.concatenate([estimate.boot, estimate.boot.mean(axis=axis + 1, keepdims=True)], axis=axis + 1)
    return Estimate(value, boot)


class Comparator:
    """Everything needed to compare methods of one run: selected test rewards, weightings, reference, resamples and
    the values' scales (``selection.value_scales``; default 1).

    ``reference`` is a fixed point (one number per value) or an ``Estimate`` with one per resample
    (``hypervolume_reference``)."""

    def __init__(self, selected: Mapping[str, np.ndarray], weightings: Sequence[Mapping[str, float]],
                 values: Sequence[str], reference: Sequence[float] | Estimate, resamples: ClusterResamples,
                 ci: float = 0.95, tie_tol: float = 0.0, scales: Sequence[float] | None = None):
        self.selected, self.values, self.resamples, self.ci, self.tie_tol = dict(selected), list(values), resamples, ci, tie_tol
        self.scales = np.ones(len(self.values)) if scales is None else np.asarray(scales, dtype=float)
        self.weights = np.array([[w.get(v, 0.0) for v in self.values] for w in weightings], dtype=float)
        self.labels = [weighting_label(w) for w in weightings] + [ALL_WEIGHTINGS]
        self.reference = reference if isinstance(reference, Estimate) else fixed_reference(reference, resamples.n_boot)
        self.rewards = {m: method_rewards(x, resamples) for m, x in self.selected.items()}
        self._hypervolumes: dict[str, Estimate] = {}
        self._win_rates: dict[tuple[str, str], tuple[Estimate, np.ndarray]] = {}
        first = next(iter(self.selected.values()))
        self.n_seeds, self.n_prompts = first.shape[0], first.shape[-1]

    def hypervolume(self, method: str) -> Estimate:
        """A method's hypervolume over all resamples (computed once; used by comparisons, table and leader)."""
        if method not in self._hypervolumes:
            self._hypervolumes[method] = self.rewards[method].hypervolume(self.reference, self.scales)
        return self._hypervolumes[method]

    @property
    def hypervolume_unit(self) -> float:
        """One standardised unit of hypervolume in raw reward units (the product of the scales)."""
        return float(np.prod(self.scales))

    def seed_hypervolume(self, method: str, seed_index: int) -> float:
        """Hypervolume (standardised) of one training seed's selected points (means over the test prompts), against
        the full-sample reference."""
        means = self.selected[method][seed_index].mean(axis=-1)
        return float(hypervolumes(means[None] / self.scales, self.reference.value / self.scales)[0])

    def win_rates(self, a: str, b: str) -> tuple[Estimate, np.ndarray]:
        """Win rate of a against b per (weighting, value) with 'all' appended, and the raw credits (computed once
        per pair; used by the comparisons and the win-rate table)."""
        if (a, b) not in self._win_rates:
            credit = win_credit(self.selected[a], self.selected[b], self.tie_tol)
            self._win_rates[(a, b)] = (_with_average(method_rewards(credit, self.resamples).rewards), credit)
        return self._win_rates[(a, b)]

    def _row(self, a: str, b: str, metric: str, value: str, weighting: str, est: float, boot: np.ndarray) -> dict:
        row = {"method_a": a, "method_b": b, "metric": metric, "value": value, "weighting": weighting,
               "n_prompts": self.n_prompts, "n_seeds": self.n_seeds, **judge(est, boot, self.ci, self.n_prompts)}
        return {column: row[column] for column in COMPARISON_COLUMNS}

    def compare(self, a: str, b: str) -> list[dict]:
        """Rows of the comparisons table for target ``a`` against ``b``."""
        rows = []
        hv = self.hypervolume(a) - self.hypervolume(b)
        rows.append(self._row(a, b, "hypervolume", "", "", hv.value, hv.boot))
        standardised = self.weights / self.scales
        weighted = _with_average(self.rewards[a].weighted(standardised) - self.rewards[b].weighted(standardised))
        for w, label in enumerate(self.labels):
            rows.append(self._row(a, b, "weighted_reward", "", label, weighted.value[w], weighted.boot[:, w]))
        mean = _with_average(self.rewards[a].rewards - self.rewards[b].rewards)
        wins, _ = self.win_rates(a, b)
        for metric, est, offset in (("mean_reward", mean, 0.0), ("win_rate", wins, 0.5)):
            for v, value in enumerate(self.values):
                for w, label in enumerate(self.labels):
                    rows.append(self._row(a, b, metric, value, label, est.value[w, v] - offset,
                                          est.boot[:, w, v] - offset))
        return rows

    def comparisons(self, target: str) -> pd.DataFrame:
        """The comparisons table of ``target`` against every other method."""
        if target not in self.selected:
            raise ValueError(f"win_rate_target {target!r} is not among the evaluated methods {list(self.selected)}")
        rows = [row for other in self.selected if other != target for row in self.compare(target, other)]
        return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)

    def against_baselines(self, baselines: Sequence[str]) -> pd.DataFrame:
        """Every method against each penalty-free baseline: the comparisons table's hypervolume rows and its rows
        averaged over weightings (``all``), method a being the method and b the baseline."""
        rows = [row for b in baselines if b in self.selected for a in self.selected if a != b
                for row in self.compare(a, b) if row["weighting"] in ("", ALL_WEIGHTINGS)]
        return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)

    def win_rate_table(self, target: str, weightings: Sequence[str]) -> pd.DataFrame:
        """Win/tie/loss counts over (seed, test prompt) and win rate with CI, for the given weighting labels."""
        rows = []
        for other in self.selected:
            if other == target:
                continue
            est, credit = self.win_rates(target, other)
            for label in weightings:
                w = self.labels.index(label)
                for v, value in enumerate(self.values):
                    cells = credit[:, w, v] if label != ALL_WEIGHTINGS else credit[:, :, v]
                    judged = judge(est.value[w, v], est.boot[:, w, v], self.ci, self.n_prompts, null=0.5)
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
            hv = self.hypervolume(method)
            low, high = percentile_interval(hv.boot, self.ci, self.n_prompts)
            unit = self.hypervolume_unit
            rows.append({"method": method, "hypervolume": float(hv.value) * unit, "hv_ci_low": float(low) * unit,
                         "hv_ci_high": float(high) * unit, "hypervolume_std": float(hv.value),
                         "hv_std_ci_low": float(low), "hv_std_ci_high": float(high)})
        return pd.DataFrame(rows)

    def leader(self) -> tuple[str, str, dict] | None:
        """The method with the largest hypervolume, the runner-up, and their paired comparison row."""
        if len(self.selected) < 2:
            return None
        ranked = sorted(self.selected, key=lambda m: -float(self.hypervolume(m).value))
        diff = self.hypervolume(ranked[0]) - self.hypervolume(ranked[1])
        return ranked[0], ranked[1], self._row(ranked[0], ranked[1], "hypervolume", "", "", diff.value, diff.boot)
