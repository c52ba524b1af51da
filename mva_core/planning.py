"""mva-plan: the evaluation prompts and training seeds the next run needs to resolve chosen rows, and its job hours.

From a finished run it takes each chosen row's per-prompt quantity ``y[seed, prompt]`` (``mva_core.row_quantities``)
and its variance components (``mva_core.variance``: seed, prompt, residual). A design of S training seeds and N
evaluation prompts then has a known distribution of the ``mde`` its row will report, the interval being the one
the tables use for a mean over seeds and prompts (Student t on the components' standard error with the degrees of
freedom a run reports, ``variance.observed_degrees_of_freedom``; one seed: prompts only). The planner simulates that
distribution (the ANOVA mean squares of y = μ + a_s + b_p + e drawn from their chi-square laws, normal effects)
and, for every seed count, prints the smallest prompt count on a ladder of round numbers whose *median* mde is at
most the target for every chosen row, with the job hours scaled from the run's Snakemake benchmarks: generation
and scoring ∝ seeds × prompts, value-vector training ∝ seeds, everything else once.

With one training seed the seed component is unknown: designs are then for one seed, and their intervals cover
prompt sampling only, conditional on the trained vectors.

    mva-plan results/default --row interference:method=mva,baseline=soup,u=concise,v=positive --mde 3
"""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mva_core.artifacts import read_provenance
from mva_core.contracts import EVALUATION_PROMPTS, POINTS, SCORES, read_table
from mva_core.markdown import to_markdown
from mva_core.rewards import seeded_rewards
from mva_core.row_quantities import RowQuantity, find_rows, row_quantities
from mva_core.selection import SELECTION, split_prompts
from mva_core.variance import (
    Components,
    components,
    degrees_of_freedom_from_mean_squares,
    minimum_detectable_effect,
)

N_SIMULATIONS = 4000
"""Simulated runs per design: the median mde to about ±1%."""
SIMULATION_SEED = 0
PER_ANSWER_STAGES = ("generate", "merge_generations", "score")
"""Benchmarked stages whose work grows with seeds × evaluation prompts."""
PER_SEED_STAGES = ("train_value_vector", "train_modpo_vector", "decorrelation_table")
"""Benchmarked stages run once per training seed; every other stage runs once per run."""


class PlanError(ValueError):
    """A run directory the planner cannot read, or a request it cannot answer; the message names the culprit."""


def prompt_ladder(max_prompts: int) -> list[int]:
    """Round prompt counts from 2 up to ``max_prompts``: 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, ..."""
    steps = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
    ladder = sorted({int(round(step * 10**k)) for k in range(8) for step in steps})
    return [n for n in ladder if 2 <= n <= max_prompts]


@functools.cache
def _mde_factors(alpha: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.geomspace(0.5, 1e6, 3000)
    return np.log(grid), np.array([minimum_detectable_effect(1.0, df, alpha, power) for df in grid])


def mde_factor(df: np.ndarray, alpha: float, power: float) -> np.ndarray:
    """``minimum_detectable_effect(1, df)`` for an array of df: interpolated in log df on 3,000 grid points from 0.5
    to 10⁶ (relative error below 10⁻⁴)."""
    log_grid, factors = _mde_factors(alpha, power)
    return np.interp(np.log(np.clip(df, 0.5, 1e6)), log_grid, factors)


def simulated_mdes(parts: Components, n_seeds: int, n_prompts: int, alpha: float, power: float,
                   n_sim: int = N_SIMULATIONS, seed: int = SIMULATION_SEED) -> np.ndarray:
    """The mde each of ``n_sim`` simulated runs of ``n_seeds`` × ``n_prompts`` reports, given the true components
    ``parts``: the two-way ANOVA mean squares drawn from their scaled chi-square laws, the components estimated from
    them as ``variance.components`` does (moments, truncated at 0), the SE from them and the df a run reports
    (``variance.observed_degrees_of_freedom``; one seed: prompts − 1)."""
    rng = np.random.default_rng(seed)
    S, P = n_seeds, n_prompts
    if S == 1:
        total = parts.prompt + parts.residual
        estimated = [Components(np.nan, float(ms), 0.0) for ms in total * rng.chisquare(P - 1, n_sim) / (P - 1)]
        df = np.full(n_sim, P - 1.0)
    else:
        if np.isnan(parts.seed):
            raise PlanError("the seed component is unknown (one training seed): only one-seed designs can be planned")
        dfs = (S - 1, P - 1, (S - 1) * (P - 1))
        expected = (parts.residual + P * parts.seed, parts.residual + S * parts.prompt, parts.residual)
        ms_seed, ms_prompt, ms_res = (e * rng.chisquare(d, n_sim) / d for e, d in zip(expected, dfs))
        estimated = [Components(max(0.0, (a - e) / P), max(0.0, (b - e) / S), float(e))
                     for a, b, e in zip(ms_seed, ms_prompt, ms_res)]
        df = np.array([degrees_of_freedom_from_mean_squares(a, b, e, S, P) for a, b, e in zip(ms_seed, ms_prompt, ms_res)])
    se = np.sqrt([c.variance_of_mean(S, P) for c in estimated])
    return mde_factor(df, alpha, power) * se


@dataclass(frozen=True)
class PlannedRow:
    """A chosen row with its components and the share of evaluation prompts it is reported on."""

    row: RowQuantity
    parts: Components
    prompt_share: float

    def prompts_in_row(self, n_prompts: int) -> int:
        return max(2, int(round(self.prompt_share * n_prompts)))

    def median_mde(self, n_seeds: int, n_prompts: int, alpha: float, power: float) -> float:
        return float(np.median(simulated_mdes(self.parts, n_seeds, self.prompts_in_row(n_prompts), alpha, power)))


@dataclass(frozen=True)
class JobTimes:
    """A run's benchmarked job seconds: once per run, per training seed, and per seed × evaluation prompts."""

    once: float
    per_seed: float
    per_answer: float
    n_seeds: int
    n_prompts: int
    n_jobs: int
    device: str

    def hours(self, n_seeds: int, n_prompts: int) -> float:
        seeds = n_seeds / self.n_seeds
        return (self.once + self.per_seed * seeds + self.per_answer * seeds * n_prompts / self.n_prompts) / 3600


def job_times(run_dir: Path, n_seeds: int, n_prompts: int) -> JobTimes | None:
    """Seconds (column ``s``) of every Snakemake benchmark TSV under ``run_dir/benchmarks``, by how the stage scales
    (the stage is the first folder under benchmarks/, or the file name); the device from the run's generations'
    provenance. None without benchmarks."""
    root = run_dir / "benchmarks"
    seconds = {"once": 0.0, "per_seed": 0.0, "per_answer": 0.0}
    files = sorted(root.rglob("*.tsv"))
    for path in files:
        parts = path.relative_to(root).parts
        stage = parts[0] if len(parts) > 1 else path.stem
        table = pd.read_csv(path, sep="\t")
        if "s" not in table.columns:
            raise PlanError(f"{path}: a Snakemake benchmark file needs a column 's' (seconds), has {list(table.columns)}")
        kind = "per_answer" if stage in PER_ANSWER_STAGES else "per_seed" if stage in PER_SEED_STAGES else "once"
        seconds[kind] += float(table["s"].sum())
    if not files:
        return None
    generations = sorted(run_dir.glob("seed_*/evaluation/*/generations.parquet"))
    record = read_provenance(generations[0]) if generations else None
    device = ((record or {}).get("compute") or {}).get("device", "unknown")
    return JobTimes(**seconds, n_seeds=n_seeds, n_prompts=n_prompts, n_jobs=len(files), device=device)


@dataclass(frozen=True)
class Design:
    n_seeds: int
    n_prompts: int | None  # None: the target is not reached on the ladder
    mdes: tuple[float, ...]
    hours: float | None


def smallest_design(rows: Sequence[PlannedRow], n_seeds: int, target: float, ladder: Sequence[int], alpha: float,
                    power: float, times: JobTimes | None) -> Design:
    """For ``n_seeds``, the smallest prompt count of ``ladder`` at which every row's median mde is at most
    ``target`` (bisection: the median mde falls as prompts are added)."""
    def reaches(n_prompts: int) -> bool:
        return all(row.median_mde(n_seeds, n_prompts, alpha, power) <= target for row in rows)

    low, high = 0, len(ladder) - 1
    if not reaches(ladder[high]):
        return Design(n_seeds, None, tuple(row.median_mde(n_seeds, ladder[high], alpha, power) for row in rows), None)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if reaches(ladder[middle]) else (middle + 1, high)
    n_prompts = ladder[low]
    return Design(n_seeds, n_prompts, tuple(row.median_mde(n_seeds, n_prompts, alpha, power) for row in rows),
                  times.hours(n_seeds, n_prompts) if times else None)


def cheapest(designs: Sequence[Design]) -> Design | None:
    """The reaching design with the fewest job hours (without benchmarks: the fewest answers, seeds × prompts)."""
    reached = [d for d in designs if d.n_prompts is not None]
    return min(reached, key=lambda d: (d.hours if d.hours is not None else 0.0, d.n_seeds * d.n_prompts), default=None)


@dataclass(frozen=True)
class Run:
    """What the planner reads from a finished run."""

    path: Path
    rows: list[RowQuantity]
    n_seeds: int
    n_prompts: int
    selection_fraction: float
    ci: float


def _design_table(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / "tables" / "design.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def read_run(run_dir: str | Path, selection_fraction: float | None = None) -> Run:
    """Scores of every seed, points and prompts of ``run_dir``; the selection fraction and CI level from
    ``tables/design`` when not given (else 0.5 and 0.95, the config defaults)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise PlanError(f"run directory {str(run)!r} does not exist")
    score_files = sorted(run.glob("seed_*/evaluation/*/scores_*.parquet"))
    point_files = sorted(run.glob("evaluation/*/points.parquet"))
    prompts_file = run / "evaluation" / "prompts.parquet"
    if not score_files or not point_files or not prompts_file.is_file():
        raise PlanError(f"{run}: no per-prompt scores (seed_<s>/evaluation/<method>/scores_<value>.parquet), points "
                        "(evaluation/<method>/points.parquet) or evaluation/prompts.parquet: not a finished run")
    rewards = seeded_rewards(pd.concat([read_table(p, SCORES) for p in score_files], ignore_index=True))
    points = pd.concat([read_table(p, POINTS) for p in point_files], ignore_index=True)
    prompts = read_table(prompts_file, EVALUATION_PROMPTS)
    design = _design_table(run)
    if selection_fraction is None:
        selection_fraction = (float(design["n_selection_prompts"].iloc[0] / design["n_prompts"].iloc[0])
                              if design is not None else 0.5)
    split = split_prompts(prompts[prompts["prompt_id"].isin(rewards.prompts)], selection_fraction)
    selection = rewards.prompt_subset(split.loc[split["part"] == SELECTION, "prompt_id"].tolist())
    return Run(run, row_quantities(rewards, selection, points), len(rewards.seeds), len(rewards.prompts),
               selection_fraction, float(design["ci"].iloc[0]) if design is not None else 0.95)


def plan_rows(run: Run, specs: Sequence[str]) -> list[PlannedRow]:
    return [PlannedRow(row, components(row.y), 1 - run.selection_fraction if row.test_prompts_only else 1.0)
            for row in find_rows(run.rows, specs)]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def report(run: Run, rows: Sequence[PlannedRow], target: float, max_seeds: int, max_prompts: int,
           power: float) -> str:
    """The plan as text: the run, each row's estimate and components, the smallest design per seed count, the
    cheapest, and what one seed cannot tell."""
    alpha = 1 - run.ci
    times = job_times(run.path, run.n_seeds, run.n_prompts)
    lines = [f"Run {run.path}: {run.n_seeds} training seed(s) × {run.n_prompts} evaluation prompts."]
    if times:
        lines.append(f"Job time: {times.hours(run.n_seeds, run.n_prompts):.2f} h over {times.n_jobs} benchmarked jobs "
                     f"on device {times.device!r} (the run records the device kind, not its CPU/GPU model).")
    else:
        lines.append(f"Job time: unknown (no benchmark TSVs under {run.path / 'benchmarks'}).")
    lines.append("")
    for i, planned in enumerate(rows, 1):
        parts = planned.parts
        seed = "unknown (one training seed)" if np.isnan(parts.seed) else _fmt(parts.seed)
        residual = "inseparable from the prompt part with one seed" if np.isnan(parts.seed) else _fmt(parts.residual)
        lines += [f"[{i}] {planned.row.spec}  ({planned.row.label})",
                  f"    estimate {planned.row.y.mean():+.4g}; variance components: seed {seed}, prompt "
                  f"{_fmt(parts.prompt)}, residual {residual}"
                  + ("; reported on the test prompts only" if planned.row.test_prompts_only else "")]
    seeds = [1] if run.n_seeds == 1 else list(range(2, max_seeds + 1))
    ladder = prompt_ladder(max_prompts)
    designs = [smallest_design(rows, s, target, ladder, alpha, power, times) for s in seeds]
    table = pd.DataFrame([{"training seeds": d.n_seeds,
                           "evaluation prompts": d.n_prompts if d.n_prompts else f"> {ladder[-1]}",
                           **{f"median mde [{i}]": _fmt(m) for i, m in enumerate(d.mdes, 1)},
                           "job hours": f"{d.hours:.2f}" if d.hours is not None else "unknown"} for d in designs])
    lines += ["", f"Smallest designs with median mde ≤ {target:g} on every row ({run.ci:.0%} level, {power:.0%} power; "
              f"median over {N_SIMULATIONS} simulated runs; '> {ladder[-1]}': not reached, mde at {ladder[-1]} "
              "prompts; job hours: the sum of the jobs' wall clocks):", "", to_markdown(table).rstrip("\n"), ""]
    best = cheapest(designs)
    if best is None:
        lines.append(f"No design up to {max_seeds} seeds × {ladder[-1]} prompts reaches mde {target:g}.")
    else:
        hours = f", about {best.hours:.2f} job hours" if best.hours is not None else ""
        lines.append(f"Cheapest: {best.n_seeds} training seed(s) × {best.n_prompts} evaluation prompts{hours}.")
    if run.n_seeds == 1:
        lines += ["", "The seed component is unknown: with one training seed the interval covers prompt sampling "
                  "only, conditional on these trained vectors, and so do the designs above. A second seed would "
                  "estimate how much the row moves between training runs (from the two seeds' means, 1 degree of "
                  "freedom: a rough first look) and separate the prompt effect from the seed × prompt interaction; "
                  "if the seed component is large, more seeds, not more prompts, lower the mde."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mva-plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run, e.g. results/default")
    parser.add_argument("--row", action="append", default=[], metavar="SPEC",
                        help="a row, e.g. interference:method=mva,baseline=soup,u=concise,v=positive,lambda=1 "
                             "(repeat for several; without one, the run's rows are listed)")
    parser.add_argument("--mde", type=float, required=True, help="target minimum detectable effect, in the row's units")
    parser.add_argument("--power", type=float, default=0.80, help="power of the mde (default 0.80)")
    parser.add_argument("--max-seeds", type=int, default=10, help="most training seeds to consider (default 10)")
    parser.add_argument("--max-prompts", type=int, default=20000, help="most evaluation prompts to consider")
    parser.add_argument("--selection-fraction", type=float, default=None,
                        help="the run's evaluation.selection_fraction (default: from tables/design, else 0.5)")
    args = parser.parse_args(argv)
    try:
        if not args.mde > 0 or not 0 < args.power < 1 or args.max_seeds < 2 or args.max_prompts < 2:
            raise PlanError("--mde must be > 0, --power in (0, 1), --max-seeds and --max-prompts >= 2")
        run = read_run(args.run_dir, args.selection_fraction)
        print(report(run, plan_rows(run, args.row), args.mde, args.max_seeds, args.max_prompts, args.power))
    except ValueError as error:  # PlanError, RowError, and contract errors of the run's tables
        print(f"mva-plan: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
