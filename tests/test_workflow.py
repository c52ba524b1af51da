"""The Snakemake DAG: planned for every shipped config, and the smoke config run for real on tiny data."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import snakemake
from safetensors.torch import load_file
from synthetic import write_placeholder_sources

from mva_core.adapters import read_value_vector
from mva_core.artifacts import read_provenance
from mva_core.comparisons import COMPARISON_COLUMNS
from mva_core.decorrelation import METRICS

REPO = Path(__file__).resolve().parents[1]
METHODS = ["mva", "mva_dw", "soup", "ortho", "single", "expo", "modpo"]
CONFIGS = sorted([REPO / "config.yaml", *(p for p in (REPO / "config").glob("*.yaml") if "schema" not in p.name)])


def dry_run(config: Path, workdir: Path, *configfiles: str) -> subprocess.CompletedProcess:
    """``snakemake -n`` of ``config`` in ``workdir``, its data sources replaced by empty placeholder files."""
    root = write_placeholder_sources(config, workdir / "placeholder_data")
    return snakemake("-n", "--configfile", str(config), *configfiles, "--config", f"data_roots=['{root}']", workdir=workdir)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """``dry_run`` of a shipped config, run once per module and config and shared by the tests that read it."""
    done = {}

    def plan(config: Path) -> subprocess.CompletedProcess:
        if config not in done:
            done[config] = dry_run(config, tmp_path_factory.mktemp(f"plan_{config.stem}"))
        return done[config]

    return plan


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_plans_every_stage(config, plans):
    result = plans(config)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    for rule in ["base_model", "prepare_value_data", "train_value_vector", "decorrelation_table"]:
        assert rule in plan, f"{rule} missing from the plan of {config.name}"


def _job_counts(plan: str) -> dict[str, int]:
    table = plan.split("Job stats:")[1].split("\n\n")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if len(line.split()) == 2}


def test_seeds_multiply_training_and_evaluation_but_not_data_or_reward_models(tmp_path, plans):
    one = plans(REPO / "config/smoke.yaml")
    (tmp_path / "seeds.yaml").write_text("seeds: [1, 2]\n")
    two = dry_run(REPO / "config/smoke.yaml", tmp_path, str(tmp_path / "seeds.yaml"))
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    single, double = _job_counts(one.stdout), _job_counts(two.stdout)
    for rule in ["train_value_vector", "train_modpo_vector", "generate", "score", "decorrelation_table"]:
        assert double[rule] == 2 * single[rule], rule
    for rule in ["prepare_value_data", "base_model", "sft", "train_reward_model", "frontiers"]:
        assert double[rule] == single[rule], rule


def test_methods_sharing_vectors_share_one_decorrelation_job(plans):
    """soup, single and expo are all evaluated with the independent vectors: one table for the three of them."""
    result = plans(REPO / "config/smoke.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    tables = set(re.findall(r"seed_1/decorrelation/(\w+)\.parquet", result.stdout))
    assert tables == {"independent", "mva", "mva_dw", "ortho"}
    assert _job_counts(result.stdout)["decorrelation_table"] == len(tables)  # 6 methods use value vectors


STANDALONE = """run_name: alone
values:
  concise: {order: 1, sources: [{path: hh-rlhf/helpful-online/test.jsonl.gz, derive: shorter}]}
  helpful: {order: 2, sources: [{path: hh-rlhf/helpful-base/test.jsonl.gz}]}
methods:
  soup: {penalty: {kind: none}}
evaluation: {win_rate_target: soup}
"""


def test_a_config_file_stands_alone_and_files_still_layer(tmp_path):
    config = tmp_path / "alone.yaml"
    config.write_text(STANDALONE)
    plan = dry_run(config, tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    text = plan.stdout + plan.stderr
    assert "concise" in text and "harmless" not in text and "/mva/" not in text and "seed_42/decorrelation/independent" in text
    overlay = tmp_path / "overlay.yaml"  # README: --configfile config.yaml my.yaml overrides nested keys
    overlay.write_text("run_name: layered\ndpo: {epochs: 2}\n")
    layered = dry_run(REPO / "config.yaml", tmp_path, str(overlay))
    text = layered.stdout + layered.stderr
    assert layered.returncode == 0, text[-3000:]
    assert "results/layered/seed_42/value_vectors/mva/positive" in text and "concise" in text


def test_the_modules_the_snakefile_imports_load_without_torch():
    """Snakemake parses the Snakefile at every start (and a dry run is all parsing): rules/common.smk's imports
    must stay light, so mva_core.base_model imports torch and transformers only where it uses them."""
    modules = sorted(set(re.findall(r"^from (mva_core\.\w+) import", (REPO / "rules/common.smk").read_text(), re.M)))
    assert "mva_core.base_model" in modules
    code = f"import sys; import {', '.join(modules)}; print(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_typo_in_config_fails_before_any_job(tmp_path):
    result = snakemake("-n", "--configfile", str(REPO / "config/smoke.yaml"), "--config", "dpo={'lerning_rate': 1}",
                       workdir=tmp_path)
    assert result.returncode != 0
    assert "config key 'dpo'" in result.stdout + result.stderr
    assert "lerning_rate" in result.stdout + result.stderr


@pytest.mark.slow
def test_smoke_run_builds_value_vectors(smoke_run):
    run = smoke_run[0] / "results/smoke"
    for chain, value in [("independent", "helpful"), ("independent", "harmless"), ("mva", "harmless"), ("ortho", "harmless")]:
        vector = run / "seed_1/value_vectors" / chain / value
        weights = load_file(vector / "adapter_model.safetensors")
        assert weights and all(t.isfinite().all() for t in weights.values())
        assert "penalty" in pd.read_parquet(vector / "training_log.parquet").columns
    table = pd.read_parquet(run / "seed_1/decorrelation/mva.parquet")
    assert set(METRICS) <= set(table.columns)
    assert len(table) > 0
    assert not list(run.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_smoke_run_evaluates_every_grid_point(smoke_run):
    run = smoke_run[0] / "results/smoke"
    prompts = pd.read_parquet(run / "evaluation/prompts.parquet")
    for method in METHODS:
        points = pd.read_parquet(run / f"evaluation/{method}/points.parquet")
        generations = pd.read_parquet(run / f"seed_1/evaluation/{method}/generations.parquet")
        assert len(generations) == len(points) * len(prompts)
        for value in ["helpful", "harmless"]:
            scores = pd.read_parquet(run / f"seed_1/evaluation/{method}/scores_{value}.parquet")
            assert len(scores) == len(generations) and scores["reward"].notna().all()
    mva, soup = (pd.read_parquet(run / f"seed_1/evaluation/{m}/generations.parquet").set_index(["point_id", "prompt_id"])
                 for m in ("mva", "soup"))
    for point in ("0_0", "1_0"):  # soup's points that are mva's models: generated once, copied (shared_points)
        assert soup.loc[point, "response"].equals(mva.loc[point, "response"])
    frontiers = pd.read_parquet(run / "tables/frontiers.parquet")
    assert set(frontiers["method"]) == set(METHODS + ["mva_twin"]) and (frontiers["hypervolume"] >= 0).all()
    assert (run / "seed_1/modpo_vectors/modpo/w0/adapter_model.safetensors").is_file()
    expo = pd.read_parquet(run / "evaluation/expo/points.parquet")
    assert expo[["lam_helpful", "lam_harmless"]].max().max() > 1  # extrapolation beyond the value vectors
    assert len(pd.read_parquet(run / "tables/win_rates.parquet")) > 0
    comparisons = pd.read_parquet(run / "tables/comparisons.parquet")
    assert list(comparisons.columns) == [*COMPARISON_COLUMNS, "primary"]
    assert set(comparisons["method_b"]) == set(METHODS + ["mva_twin"]) - {"mva"}
    assert {"hypervolume", "mean_reward", "win_rate"} <= set(comparisons["metric"])
    efficacy = pd.read_parquet(run / "tables/efficacy.parquet")
    assert {"mva", "soup", "single", "expo"} <= set(efficacy["method"]) and "modpo" not in set(efficacy["method"])
    interference = pd.read_parquet(run / "tables/interference.parquet")
    assert "mva − soup" in set(interference["method"]) and "single" not in set(interference["method"])
    for stem in ["frontier_helpful_vs_harmless", "win_rates", "heatmap_mva", "single_value_vectors", "training_curves",
                 "efficacy"]:
        assert (run / f"figures/{stem}.png").stat().st_size > 0 and (run / f"figures/{stem}.pdf").stat().st_size > 0
    summary = (run / "summary.md").read_text()
    assert "Hypervolume" in summary and "pairwise accuracy" in summary
    assert "## Provenance" in summary and "hh-rlhf/helpful-base/test.jsonl.gz | `" in summary
    record = read_provenance(run / "seed_1/evaluation/mva/scores_helpful.parquet")
    assert record["rule"] == "score" and record["wildcards"] == {"seed": "1", "method": "mva", "value": "helpful"}
    assert "results/smoke/seed_1/evaluation/mva/generations.parquet" in record["inputs"]
    assert read_provenance(run / "seed_1/value_vectors/mva/harmless")["rule"] == "train_value_vector"


@pytest.mark.slow
def test_smoke_rerun_has_nothing_to_do_and_report_builds(smoke_run):
    workdir, args = smoke_run
    again = snakemake(*args, "-n", workdir=workdir)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
    without_cores = [a for i, a in enumerate(args) if a != "--cores" and (i == 0 or args[i - 1] != "--cores")]
    report = snakemake(*without_cores, "--report", str(workdir / "report.html"), workdir=workdir)  # as in README
    assert report.returncode == 0, report.stderr[-3000:]
    assert (workdir / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_identical_methods_under_two_names_are_inconclusive_on_every_metric(smoke_run):
    run = smoke_run[0] / "results/smoke"
    twin = pd.read_parquet(run / "tables/comparisons.parquet").query("method_b == 'mva_twin'")
    assert len(twin) > 0 and set(twin["metric"]) >= {"hypervolume", "mean_reward", "win_rate", "weighted_reward"}
    assert (twin["verdict"] == "inconclusive").all(), twin[twin["verdict"] != "inconclusive"]
    assert (twin["estimate"] == 0).all()
    summary = (run / "summary.md").read_text()
    block = summary.split("- mva beats mva_twin:\n")[1].split("\n- ")[0].split("\n\n")[0].splitlines()
    assert len(block) >= 4 and all("-> **inconclusive**" in line for line in block), block


@pytest.mark.slow
def test_value_vectors_of_one_run_start_from_distinct_initialisations(smoke_run):
    run = smoke_run[0] / "results/smoke/seed_1/value_vectors/independent"
    a = [load_file(run / value / "adapter_model.safetensors") for value in ("helpful", "harmless")]
    first, second = (torch.cat([w[k].flatten() for k in sorted(w) if "lora_A" in k]) for w in a)
    assert (first - second).norm() > 0.5 * first.norm()


def test_decorrelation_configs_plan_the_projection_and_the_controls(plans):
    """Issue 24: the natural pair with the projection and the controls (a replicate, a vector planted in it, its
    projection), the strong pair with the projection; five seeds or more, equivalence margins declared."""
    for name, projections, planted in (("decorrelation.yaml", 2, 1), ("decorrelation_strong.yaml", 1, 0)):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        result = plans(REPO / "config" / name)
        assert result.returncode == 0, result.stderr[-3000:]
        counts = _job_counts(result.stdout)
        seeds = len(config["seeds"])
        assert seeds >= 5 and set(config["evaluation"]["equivalence_margins"]) == {"concise", "positive"}
        assert counts["project_value_vector"] == projections * seeds and counts.get("plant_value_vector", 0) == planted * seeds
        assert "Evaluation plan: " in result.stderr and f"{seeds} training seed(s)" in result.stderr
        assert {"soup", "mva", "cka10", "projection"} <= set(config["methods"])


CONTROLS = """methods:
  rep: {type: replicate, penalty: {kind: none}}
  planted: {type: planted, of: rep, c: 0.5}
  proj_planted: {type: projection, of: planted}
"""


def test_the_paper_scale_decorrelation_layer_plans_the_controls_over_paper_hh(tmp_path):
    """README's next step: config/layers/decorrelation_paper.yaml over config/paper_hh.yaml (a GPU pilot)."""
    result = dry_run(REPO / "config/paper_hh.yaml", tmp_path, str(REPO / "config/layers/decorrelation_paper.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout)
    assert counts["plant_value_vector"] == 2 and counts["project_value_vector"] == 2 * 2  # per seed: projection ×2
    assert "results/decorrelation_paper/seed_101/value_vectors/replicate/harmless" in result.stdout


def test_points_that_are_an_earlier_methods_models_are_generated_once(plans):
    result = plans(REPO / "config/decorrelation.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Shared points: 18 (method, λ point) pairs" in result.stderr  # SFT, concise at 1 and 2 of 6 methods
    assert "720 fewer generations per training seed" in result.stderr  # 18 × 40 prompts


@pytest.mark.slow
def test_rules_build_the_replicate_the_planted_vector_and_its_projection(tmp_path):
    """Issue 24, end to end on the smoke data: the replicate starts from its own initialisation, and the projection
    the rules write of the vector planted in it equals the projection of the replicate itself."""
    from synthetic import write_smoke_data_root

    from mva_core.derived_vectors import write_projection
    from mva_core.training.records import read_metadata
    from mva_core.value_training import derive_seed

    controls = tmp_path / "controls.yaml"
    controls.write_text(CONTROLS)
    data_root = write_smoke_data_root(tmp_path / "data")
    seed = tmp_path / "work/results/smoke/seed_1"
    targets = [f"results/smoke/seed_1/{path}" for path in
               ("projected_vectors/proj_planted/harmless", "decorrelation/planted.parquet", "decorrelation/proj_planted.parquet")]
    result = snakemake(*targets, "--cores", "2", "--configfile", str(REPO / "config/smoke.yaml"), str(controls),
                       "--config", f"data_roots=['{data_root}']", workdir=tmp_path / "work")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    replicate, independent = seed / "value_vectors/rep/harmless", seed / "value_vectors/independent"
    init_seed = read_metadata(replicate)["init_seed"]  # soup's harmless vector starts from (1, "value", "harmless")
    assert init_seed == derive_seed(1, "value", "harmless", "replicate", "rep") != derive_seed(1, "value", "harmless")
    assert read_metadata(independent / "helpful")["init_seed"] == derive_seed(1, "value", "helpful")
    assert read_metadata(seed / "planted_vectors/planted/harmless")["settings"] == {"planted": {"c": 0.5}}
    projected = seed / "projected_vectors/proj_planted/harmless"
    assert read_provenance(projected)["rule"] == "project_value_vector"
    direct = write_projection(replicate, {"helpful": independent / "helpful"}, tmp_path / "direct", "both")
    ours, theirs = (read_value_vector(folder) for folder in (projected, direct))
    assert set(ours) == set(theirs)
    for module, (a, b, s) in ours.items():
        torch.testing.assert_close(s * b @ a, theirs[module][2] * theirs[module][1] @ theirs[module][0], atol=1e-6, rtol=0)
    planted_table = pd.read_parquet(seed / "decorrelation/planted.parquet")
    assert planted_table["hsic_lora_a_sigma1"].isna().all() and planted_table["column_overlap"].notna().all()
