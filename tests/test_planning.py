"""mva-plan on synthetic runs in the run layout whose rows have known variance components (issue 23, item 9)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mva_core.planning import (
    cheapest,
    job_times,
    main,
    mde_factor,
    plan_rows,
    prompt_ladder,
    read_run,
    simulated_mdes,
    smallest_design,
)
from mva_core.reporting import build_tables
from mva_core.statistics import Estimate, judge
from mva_core.variance import Components, minimum_detectable_effect

VALUES = ["concise", "positive"]  # training order
GRID = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
SPEC = "interference:method=mva,baseline=soup,u=concise,v=positive,lambda=1"
TRUTH = Components(seed=1.0, prompt=6.0, residual=3.0)


def exact_components(parts: Components, n_seeds: int, n_prompts: int, seed: int = 0) -> np.ndarray:
    """y[seed, prompt] = 2 + a_s + b_p + e whose ANOVA estimates are exactly ``parts`` (one seed: the prompts'
    variance is ``parts.prompt``)."""
    rng = np.random.default_rng(seed)

    def scaled(x: np.ndarray, variance: float) -> np.ndarray:
        x = x - x.mean()
        return x / x.std(ddof=1) * np.sqrt(variance)

    if n_seeds == 1:
        return 2.0 + scaled(rng.normal(size=n_prompts), parts.prompt)[None, :]
    e = rng.normal(size=(n_seeds, n_prompts))
    e = e - e.mean(axis=1, keepdims=True) - e.mean(axis=0, keepdims=True) + e.mean()
    e *= np.sqrt(parts.residual / (np.sum(e**2) / ((n_seeds - 1) * (n_prompts - 1))))
    a = scaled(rng.normal(size=n_seeds), parts.seed + parts.residual / n_prompts)
    b = scaled(rng.normal(size=n_prompts), parts.prompt + parts.residual / n_seeds)
    return 2.0 + a[:, None] + b[None, :] + e


def write_run(root: Path, y: np.ndarray, seconds: dict[str, float] | None = None,
              efficacy: np.ndarray | None = None) -> Path:
    """A finished run's evaluation files: MVA and soup on a 2 × 2 grid; every point scores a shared noise c[s, p],
    and MVA's point (1, 1) adds y on concise, so the interference row MVA − soup (u = concise, v = positive, λ = 1)
    is exactly y; MVA's point (0, 1) adds ``efficacy`` on positive (its efficacy row). ``seconds``: benchmark TSVs
    (stage/file -> seconds)."""
    n_seeds, n_prompts = y.shape
    shared = np.random.default_rng(1).normal(size=(n_seeds, n_prompts))
    prompt_ids = [f"p{j:04d}" for j in range(n_prompts)]
    prompts = pd.DataFrame({"prompt_id": prompt_ids, "prompt": [[{"role": "user", "content": f"q{j}"}] for j in
                                                                 range(n_prompts)],
                            "origin": "concise", "category": None})
    (root / "evaluation").mkdir(parents=True)
    prompts.to_parquet(root / "evaluation" / "prompts.parquet")
    for method in ("mva", "soup"):
        points = pd.DataFrame([{"point_id": f"{lu:g}_{lv:g}", "kind": "sft" if lu == lv == 0 else "grid",
                                "lam_concise": lu, "lam_positive": lv, "method": method} for lu, lv in GRID])
        (root / "evaluation" / method).mkdir()
        points.to_parquet(root / "evaluation" / method / "points.parquet")
        for s in range(n_seeds):
            folder = root / f"seed_{s + 1}" / "evaluation" / method
            folder.mkdir(parents=True)
            for value in VALUES:
                rows = []
                for lu, lv in GRID:
                    extra = {("mva", 1.0, 1.0, "concise"): y[s],
                             ("mva", 0.0, 1.0, "positive"): 0.0 if efficacy is None else efficacy[s]}.get(
                        (method, lu, lv, value), 0.0)
                    rows += [{"point_id": f"{lu:g}_{lv:g}", "prompt_id": pid, "method": method, "value": value,
                              "reward": float(r), "seed": s + 1, "rm_batch_size": 8, "rm_dtype": "float32"}
                             for pid, r in zip(prompt_ids, shared[s] + extra)]
                pd.DataFrame(rows).to_parquet(folder / f"scores_{value}.parquet")
    for name, s in (seconds or {}).items():
        path = root / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"s": [s], "h:m:s": ["0:00:01"], "max_rss": [1.0]}).to_csv(path, sep="\t", index=False)
    return root


def median_mde_of_simulated_runs(parts: Components, n_seeds: int, n_prompts: int, n_runs: int = 1000,
                                 seed: int = 7) -> float:
    """Median mde over runs drawn from y = μ + a_s + b_p + e (normal, variances ``parts``), each judged as the
    tables judge a mean row (``statistics.judge``: components of its own y, SE and df from them, mde at α = 0.05,
    power 0.8)."""
    rng = np.random.default_rng(seed)
    mdes = []
    for _ in range(n_runs):
        y = (rng.normal(0, np.sqrt(parts.seed), (n_seeds, 1)) + rng.normal(0, np.sqrt(parts.prompt), (1, n_prompts))
             + rng.normal(0, np.sqrt(parts.residual), (n_seeds, n_prompts)))
        mdes.append(judge(Estimate(y.mean(), samples=y), 0.95)["mde"])
    return float(np.median(mdes))


EFFICACY = Components(seed=0.1, prompt=20.0, residual=10.0)  # prompt-heavy: needs more prompts than the interference row


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    return read_run(write_run(tmp_path_factory.mktemp("run"), exact_components(TRUTH, 3, 60),
                              efficacy=exact_components(EFFICACY, 3, 60, seed=5)))


def test_the_row_is_the_library_interference_row_and_its_components_are_known(pilot):
    (planned,) = plan_rows(pilot, [SPEC])
    assert planned.row.label == "mva − soup" and planned.prompt_share == 1.0
    np.testing.assert_allclose(planned.row.y, exact_components(TRUTH, 3, 60), atol=1e-9)
    assert (planned.parts.seed, planned.parts.prompt, planned.parts.residual) == pytest.approx((1.0, 6.0, 3.0))
    (plain,) = plan_rows(pilot, ["interference:method=soup,u=concise,v=positive"])  # λ defaults to 1
    assert np.abs(plain.row.y).max() == 0  # soup's point (1, 1) scores as its (1, 0): no interference


def test_every_row_quantity_is_the_one_behind_its_table_row(pilot):
    """The planner's y of each row is what the run's effect tables judge: same rows in the same order, y's mean the
    row's estimate, y's prompts the row's (every evaluation prompt; the test prompts for matched-efficacy rows)."""
    run = pilot.path
    scores = pd.concat([pd.read_parquet(p) for p in sorted(run.glob("seed_*/evaluation/*/scores_*.parquet"))])
    points = pd.concat([pd.read_parquet(p) for p in sorted(run.glob("evaluation/*/points.parquet"))], ignore_index=True)
    evaluation = {"bootstrap": 50, "ci": 0.95, "reference_point": "sft", "weightings": [[0.5, 0.5]],
                  "selection_weightings": None, "selection_fraction": 0.5, "interference_lambdas": [1.0],
                  "win_rate_target": "mva", "tie_tolerance": 0.0}
    tables = build_tables(scores, points, pd.read_parquet(run / "evaluation" / "prompts.parquet"), evaluation, VALUES,
                          seed=0, baselines=["mva", "soup"])
    table_rows = [*tables.efficacy.itertuples(), *tables.interference.itertuples()]
    assert [row.label for row in pilot.rows] == [row.method for row in table_rows]
    assert any(row.test_prompts_only for row in pilot.rows)  # matched-efficacy rows are among them
    for planned, row in zip(pilot.rows, table_rows):
        assert planned.y.mean() == pytest.approx(row.estimate, abs=1e-12) and planned.y.shape == (3, row.n_prompts)
        assert row.n_prompts == (30 if planned.test_prompts_only else 60)


@pytest.mark.parametrize("n_seeds, rung", [(3, 15), (5, 20)])
def test_the_planned_design_reaches_the_target_and_the_next_smaller_one_does_not(pilot, n_seeds, rung):
    """Issue 23 "Done when": the median mde of simulated runs of the planner's design is at most the target, that of
    the next smaller design (one rung fewer prompts, same seeds) above it. The runs are simulated from the true model
    and judged through ``variance.components``, independently of the planner's own draws. The target lies midway
    (geometrically) between the planner's mdes of two rungs, so that Monte Carlo noise (about 1%) cannot decide."""
    (row,) = plan_rows(pilot, [SPEC])
    ladder = prompt_ladder(5000)
    smaller = ladder[ladder.index(rung) - 1]
    target = float(np.sqrt(row.median_mde(n_seeds, rung, 0.05, 0.8) * row.median_mde(n_seeds, smaller, 0.05, 0.8)))
    design = smallest_design([row], n_seeds, target, ladder, 0.05, 0.8, None)
    assert design.n_prompts == rung
    reached = median_mde_of_simulated_runs(TRUTH, n_seeds, design.n_prompts)
    missed = median_mde_of_simulated_runs(TRUTH, n_seeds, smaller)
    assert reached <= target < missed, (design, reached, missed)


def test_the_cheapest_design_is_the_smallest_number_of_answers_without_benchmarks(pilot):
    rows = plan_rows(pilot, [SPEC])
    designs = [smallest_design(rows, s, 2.0, prompt_ladder(5000), 0.05, 0.8, None) for s in range(2, 9)]
    best = cheapest(designs)
    assert best.n_seeds * best.n_prompts == min(d.n_seeds * d.n_prompts for d in designs if d.n_prompts)
    assert [d.n_prompts for d in designs][:2] == [None, None]  # 2 or 3 seeds: the seed part alone exceeds 2


def test_the_simulated_mean_squares_match_runs_simulated_prompt_by_prompt():
    """The planner draws the ANOVA mean squares from their chi-square laws; runs simulated value by value and
    estimated with ``variance.components`` give the same median mde."""
    for parts, n_seeds, n_prompts in ((TRUTH, 3, 30), (Components(4.0, 1.0, 1.0), 2, 20), (Components(0.0, 2.0, 2.0), 5, 40)):
        planned = float(np.median(simulated_mdes(parts, n_seeds, n_prompts, 0.05, 0.8, n_sim=4000)))
        direct = median_mde_of_simulated_runs(parts, n_seeds, n_prompts, n_runs=2000)
        assert planned == pytest.approx(direct, rel=0.04)


def test_mde_factor_interpolates_the_variance_module():
    for df in (1.3, 2.0, 7.7, 45.0, 3000.0):
        assert mde_factor(np.array([df]), 0.05, 0.8)[0] == pytest.approx(minimum_detectable_effect(1.0, df), rel=1e-4)


def test_job_hours_scale_generation_with_answers_and_training_with_seeds(tmp_path):
    seconds = {"generate/seed1_mva": 1800.0, "score/seed1_mva_concise": 360.0, "train_value_vector/seed1_x": 720.0,
               "base_model": 3600.0, "figures/main": 36.0}
    run = write_run(tmp_path / "run", exact_components(Components(np.nan, 4.0, 0.0), 1, 40), seconds)
    times = job_times(run, n_seeds=1, n_prompts=40)
    assert (times.once, times.per_seed, times.per_answer) == (3636.0, 720.0, 2160.0)
    assert times.hours(1, 40) == pytest.approx(6516 / 3600)
    assert times.hours(2, 80) == pytest.approx((3636 + 2 * 720 + 4 * 2160) / 3600)
    assert times.device == "unknown"  # these files carry no provenance


def test_one_seed_plans_one_seed_and_says_what_a_second_seed_would_tell(tmp_path, capsys):
    run = write_run(tmp_path / "run", exact_components(Components(np.nan, 9.0, 0.0), 1, 40),
                    {"generate/seed1_mva": 600.0, "base_model": 60.0})
    assert main([str(run), "--row", SPEC, "--mde", "2"]) == 0
    out = capsys.readouterr().out
    assert "seed unknown (one training seed)" in out and "A second seed would estimate" in out
    design = smallest_design(plan_rows(read_run(run), [SPEC]), 1, 2.0, prompt_ladder(20000), 0.05, 0.8, None)
    assert f"Cheapest: 1 training seed(s) × {design.n_prompts} evaluation prompts" in out
    assert "device 'unknown'" in out


def test_invalid_or_missing_rows_list_the_available_rows_and_exit_2(pilot, capsys):
    assert main([str(pilot.path), "--mde", "2"]) == 2
    err = capsys.readouterr().err
    assert "name at least one row" in err and f"  {SPEC}" in err and "efficacy:method=mva,value=concise,lambda=1" in err
    assert main([str(pilot.path), "--row", "interference:method=mva,baseline=nosuch,u=concise,v=positive",
                 "--mde", "2"]) == 2
    assert "is not a row of this run" in capsys.readouterr().err
    assert main([str(pilot.path), "--row", "hypervolume:method=mva", "--mde", "2"]) == 2
    assert "kind 'hypervolume' is not one of" in capsys.readouterr().err
    assert main([str(pilot.path.parent / "nowhere"), "--row", SPEC, "--mde", "2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_several_rows_need_a_design_that_resolves_each(pilot):
    rows = plan_rows(pilot, [SPEC, "efficacy:method=mva,value=positive,lambda=1"])
    assert (rows[1].parts.seed, rows[1].parts.prompt, rows[1].parts.residual) == pytest.approx((0.1, 20.0, 10.0))
    ladder = prompt_ladder(5000)
    joint = smallest_design(rows, 5, 2.0, ladder, 0.05, 0.8, None)
    alone = [smallest_design([row], 5, 2.0, ladder, 0.05, 0.8, None).n_prompts for row in rows]
    assert joint.n_prompts == max(alone) > min(alone) and all(m <= 2.0 for m in joint.mdes)


def test_mva_plan_is_a_console_script():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'mva-plan = "mva_core.planning:main"' in pyproject.split("[project.scripts]")[1].split("\n[")[0]
