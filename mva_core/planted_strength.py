"""The planted control's strength c, fixed from a pilot run that is not analysed (issue 24).

The planted vector is the replicate minus c·ΔW_u, so the planted model at (λ_u, λ_v) = (1, 1) is, in weight space
exactly, the replicate's model at (1 − c, 1). A pilot whose grid holds the replicate at (1 − c, 1) for a few c thus
measures the reward effect of c without training or generating a planted method, as the row ``planted − replicate``
(interference on u at λ = 1):

    effect(c) = mean over seeds and prompts of  r_u(replicate at (1 − c, 1)) − r_u(replicate at (1, 1)).

The row ``planted − soup`` has the same expectation, since ``replicate − soup`` (two trainings of one penalty-free
recipe) is the null, but carries that null's training noise too, so the pilot measures c against the replicate
itself (``baseline_offset`` reports the replicate − soup difference it leaves out). Each measured c gets that mean
with its Student-t interval over seeds and prompts
(``variance.mean_interval``), and the c whose effect reaches a target (the more interference, the more negative)
is interpolated linearly between the measured c.

    python -m mva_core.planted_strength results/decorrelation_pilot --target -6
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mva_core.contracts import SCORES, read_table
from mva_core.grid import point_id
from mva_core.markdown import to_markdown
from mva_core.methods import value_order
from mva_core.rewards import SeededRewards, seeded_rewards
from mva_core.run_config import read_run_config
from mva_core.variance import mean_interval


def _point_rewards(rewards: SeededRewards, method: str, pid: str, value: str) -> np.ndarray:
    index = rewards.keys.get_indexer([(method, pid)])[0]
    if index < 0:
        raise ValueError(f"method {method!r} has no scores at point {pid}: put it in the pilot's grid")
    return rewards.rewards[:, index, rewards.values.index(value), :]


def effect_by_strength(rewards: SeededRewards, values: Sequence[str], cs: Sequence[float], ci: float = 0.95,
                       replicate: str = "replicate", baseline: str = "soup") -> pd.DataFrame:
    """Per c: the ``planted − replicate`` interference on the first value u at λ = 1 (see the module docstring) with
    its interval, and the replicate − soup offset at (1, 1); ``values`` in training order (u first, then v; any
    further value at 0)."""
    u = values[0]
    ones = [1.0, 1.0] + [0.0] * (len(values) - 2)
    base = _point_rewards(rewards, replicate, point_id(ones), u)
    offset = float((base - _point_rewards(rewards, baseline, point_id(ones), u)).mean())
    rows = []
    for c in cs:
        y = _point_rewards(rewards, replicate, point_id([1.0 - c, *ones[1:]]), u) - base
        mean, low, high, se, df = mean_interval(y, ci)
        rows.append({"c": c, "effect": mean, "ci_low": low, "ci_high": high, "se": se, "df": df,
                     "n_seeds": y.shape[0], "n_prompts": y.shape[1], "baseline_offset": offset})
    return pd.DataFrame(rows)


def strength_for(table: pd.DataFrame, target: float) -> float:
    """The c whose effect reaches ``target`` (linear between the measured c; ValueError outside their range)."""
    table = table.sort_values("c")
    effects, strengths = table["effect"].to_numpy(), table["c"].to_numpy()
    for i in range(len(table) - 1):
        a, b = effects[i], effects[i + 1]
        if min(a, b) <= target <= max(a, b) and a != b:
            return float(strengths[i] + (target - a) / (b - a) * (strengths[i + 1] - strengths[i]))
    raise ValueError(f"no measured c reaches an effect of {target:g} (effects {np.round(effects, 2).tolist()} at c = "
                     f"{strengths.tolist()}): add points (1 - c, 1) for larger c to the pilot's grid")


def read_pilot(run: Path) -> SeededRewards:
    paths = sorted(run.glob("seed_*/evaluation/*/scores_*.parquet"))
    if not paths:
        raise SystemExit(f"{run}: no per-prompt scores (seed_<s>/evaluation/<method>/scores_<value>.parquet)")
    scores = pd.concat([read_table(p, SCORES) for p in paths],
                       ignore_index=True)
    return seeded_rewards(scores)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the pilot run (its seeds are not analysed)")
    parser.add_argument("--target", type=float, required=True,
                        help="the planted − soup effect to reach, in u's reward units (negative: more interference)")
    parser.add_argument("--values", nargs="+", help="values in training order (default: the run's, from its config)")
    parser.add_argument("--c", nargs="+", type=float, default=[0.0, 0.5, 1.0], help="strengths the grid holds")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    rewards = read_pilot(args.run_dir)
    values = args.values or value_order(read_run_config(args.run_dir).config)
    table = effect_by_strength(rewards, values, args.c)
    text = to_markdown(table.round({"effect": 2, "ci_low": 2, "ci_high": 2, "se": 2, "df": 1, "baseline_offset": 2}))
    c = strength_for(table, args.target)
    text += f"\nc for an effect of {args.target:g}: {c:.2f}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
