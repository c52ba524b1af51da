"""The method registry (mva_core.methods): what each method type plans, and that the workflow asks it."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mva_core.config import ConfigError, validate_config
from mva_core.decorrelation import table_columns
from mva_core.grid import GridSettings
from mva_core.methods import DEFAULT_TYPE, METHOD_TYPES, MethodPlan, method_for, method_from_section
from mva_core.methods.types import ExpoMethod
from mva_core.penalty_kinds import KINDS
from mva_core.reporting import read_decorrelation

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config/config.schema.yaml").read_text())
GRID = GridSettings(lambdas=(0.0, 1.0))


@pytest.fixture(scope="module")
def config():
    """The smoke config: every method type, values helpful (first) and harmless, 3 weightings."""
    checked = validate_config(yaml.safe_load((REPO / "config/smoke.yaml").read_text()))
    checked["evaluation"]["weightings"] = [[1, 1], [1, 3], [3, 1]]
    return checked


def lambdas(points: pd.DataFrame, kind: str) -> set[tuple[float, float]]:
    part = points[points["kind"] == kind]
    return set(zip(part["lam_helpful"], part["lam_harmless"]))


def test_registry_holds_every_type_and_kind_the_schema_allows():
    methods = SCHEMA["properties"]["methods"]["additionalProperties"]["properties"]
    assert list(METHOD_TYPES) == methods["type"]["enum"] and DEFAULT_TYPE == methods["type"]["default"]
    assert list(KINDS) == SCHEMA["$defs"]["penalty"]["properties"]["kind"]["enum"]


def test_grid_method_trains_its_chain_and_mixes_its_vectors(config):
    mva, soup = method_for("mva", config), method_for("soup", config)
    jobs = {job.value: job for job in mva.vector_jobs()}
    assert (jobs["helpful"].chain, jobs["helpful"].penalty["kind"], jobs["helpful"].frozen_values) == ("independent", "none", ())
    assert jobs["harmless"].chain == "mva" and jobs["harmless"].penalty["kind"] == "hsic"
    assert dict(jobs["harmless"].frozen_dirs) == {"helpful": "value_vectors/independent/helpful"}
    assert mva.adapters() == {"helpful": "value_vectors/independent/helpful", "harmless": "value_vectors/mva/harmless"}
    assert soup.adapters() == {"helpful": "value_vectors/independent/helpful", "harmless": "value_vectors/independent/harmless"}
    assert (mva.vector_set, soup.vector_set) == ("mva", "independent")
    assert lambdas(mva.points(GRID), "grid") == {(1.0, 1.0)} and lambdas(mva.points(GRID), "single") == {(1.0, 0.0), (0.0, 1.0)}
    assert (mva.baseline, soup.baseline, mva.heatmap, mva.efficacy, mva.interference) == (False, True, True, True, True)
    assert mva.modpo_jobs() == ()


def test_line_methods_use_their_lambdas_or_their_type_default(config):
    single, expo = method_for("single", config), method_for("expo", config)
    assert lambdas(single.points(GRID), "line") == {(0.5, 0.0), (0.0, 0.5)}  # 1.0 is a single reference point
    assert lambdas(expo.points(GRID), "expo") == {(1.5, 0.0), (0.0, 1.5), (1.5, 1.5)}
    bare = method_from_section("e", {"type": "expo", "penalty": {"kind": "none"}}, ["helpful", "harmless"])
    assert {lam for lam, _ in lambdas(bare.points(GRID), "expo")} == {0.0, *ExpoMethod.LAMBDAS}
    plain = method_from_section("s", {"type": "single", "penalty": {"kind": "none"}}, ["helpful", "harmless"])
    assert lambdas(plain.points(GridSettings(lambdas=(0.0, 2.0))), "line") == {(2.0, 0.0), (0.0, 2.0)}
    assert single.vector_set == expo.vector_set == "independent"
    assert (single.heatmap, single.baseline, single.interference, expo.interference) == (False, False, False, True)
    assert single.efficacy and expo.efficacy and not single.sensitivity


def test_modpo_trains_one_adapter_per_weighting_and_switches_one_on_per_point(config):
    modpo = method_for("modpo", config)
    assert modpo.target == "harmless" and modpo.vector_set is None
    assert [(job.chain, job.value) for job in modpo.vector_jobs()] == [("independent", "helpful")]
    jobs = modpo.modpo_jobs()
    assert [(job.index, job.target, dict(job.weighting)) for job in jobs] == [
        (0, "harmless", {"helpful": 1, "harmless": 1}), (1, "harmless", {"helpful": 1, "harmless": 3}),
        (2, "harmless", {"helpful": 3, "harmless": 1})]
    assert modpo.adapters() == {f"w{i}": f"modpo_vectors/modpo/w{i}" for i in range(3)}
    points = modpo.points(GRID)
    assert list(points["adapter"]) == ["", "w0", "w1", "w2"] and lambdas(points, "modpo") == {(1, 1), (1, 3), (3, 1)}
    mixer = modpo.mixer_lambdas(points)
    assert list(mixer.columns) == ["point_id", "lam_w0", "lam_w1", "lam_w2"]
    assert mixer.iloc[:, 1:].to_numpy().tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert not (modpo.efficacy or modpo.interference or modpo.heatmap or modpo.baseline)


def test_plan_computes_one_decorrelation_table_per_vector_set(config):
    plan = MethodPlan.of(config)
    assert plan.vector_methods == ["mva", "mva_dw", "soup", "ortho", "single", "expo"]
    assert plan.vector_sets == ["independent", "mva", "mva_dw", "ortho"]
    assert {m: s for m, s in plan.decorrelation_sets.items() if s == "independent"} == {
        "soup": "independent", "single": "independent", "expo": "independent"}
    assert plan.chains == ["independent", "mva", "mva_dw", "ortho"] and plan.baselines == ["soup"]
    assert plan.vector_set_dirs("mva") == {"helpful": "value_vectors/independent/helpful",
                                           "harmless": "value_vectors/mva/harmless"}


CONTROLS = {"rep": {"type": "replicate", "penalty": {"kind": "none"}},
            "planted": {"type": "planted", "of": "rep", "c": 0.5},
            "proj": {"type": "projection"},
            "proj_mva": {"type": "projection", "of": "mva", "sides": "rows"},
            "proj_planted": {"type": "projection", "of": "planted", "sides": "columns"}}


@pytest.fixture(scope="module")
def controls():
    """The smoke config (values helpful, harmless) with a replicate, a vector planted in it and projections of the
    penalty-free, MVA's and the planted vectors (issue 24)."""
    raw = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    raw["methods"].update(copy.deepcopy(CONTROLS))
    return MethodPlan.of(validate_config(raw))


def test_replicate_trains_its_later_vectors_again_from_another_initialisation(controls):
    rep = controls["rep"]
    assert [(job.chain, job.value) for job in rep.vector_jobs()] == [("independent", "helpful"), ("rep", "harmless")]
    job = controls.vector_job("rep", "harmless")
    assert job.frozen_values == () and job.penalty["kind"] == "none"  # trained like soup's ...
    assert job.init_seed_names == ("value", "harmless", "replicate", "rep")  # ... from another initialisation
    assert controls.vector_job("independent", "harmless").init_seed_names == ("value", "harmless")
    assert rep.adapters() == {"helpful": "value_vectors/independent/helpful", "harmless": "value_vectors/rep/harmless"}
    assert (rep.vector_set, rep.baseline, rep.sensitivity, rep.interference, rep.efficacy) == ("rep", False, False, True, True)
    assert "rep" in controls.chains and controls.baselines == ["soup"]


def test_projected_and_planted_vectors_are_computed_from_method_of(controls):
    planted, proj, proj_mva, proj_planted = (controls[m] for m in ("planted", "proj", "proj_mva", "proj_planted"))
    assert [(j.path, j.source, dict(j.earlier), j.c) for j in planted.planted_jobs()] == [
        ("planted_vectors/planted/harmless", "value_vectors/rep/harmless",
         {"helpful": "value_vectors/independent/helpful"}, 0.5)]
    assert [(j.path, j.source, j.sides) for j in proj.projection_jobs()] == [
        ("projected_vectors/proj/harmless", "value_vectors/independent/harmless", "both")]  # of: the penalty-free vectors
    assert [(j.source, j.sides) for j in proj_mva.projection_jobs()] == [("value_vectors/mva/harmless", "rows")]
    assert [(j.source, dict(j.earlier)) for j in proj_planted.projection_jobs()] == [
        ("planted_vectors/planted/harmless", {"helpful": "value_vectors/independent/helpful"})]
    assert proj_planted.adapters() == {"helpful": "value_vectors/independent/helpful",
                                       "harmless": "projected_vectors/proj_planted/harmless"}
    assert controls.vector_set_dirs("proj_planted") == proj_planted.adapters()
    # they train nothing of their own: the vectors of their source are trained
    assert [(j.chain, j.value) for j in proj_planted.vector_jobs()] == [("independent", "helpful"), ("rep", "harmless")]
    assert [(j.chain, j.value) for j in proj_mva.vector_jobs()] == [("independent", "helpful"), ("mva", "harmless")]
    assert [j.method for j in controls.projection_jobs] == ["proj", "proj_mva", "proj_planted"]
    assert controls.planted_job("planted", "harmless") == planted.planted_jobs()[0]
    assert controls.interference_references == {"planted": "rep", "proj_mva": "mva", "proj_planted": "planted"}
    assert controls.planted_methods == ["planted"]
    assert not any(controls[m].baseline or controls[m].sensitivity for m in CONTROLS)
    assert {"proj", "planted", "proj_planted"} <= set(controls.vector_sets)
    with pytest.raises(ConfigError, match="projected vector proj/helpful: no method of this config plans it"):
        controls.projection_job("proj", "helpful")  # the first value is never projected


def test_sensitivity_figure_needs_three_weights_on_the_hsic_axis():
    def plan(methods):
        return MethodPlan.of(validate_config({**yaml.safe_load((REPO / "config/smoke.yaml").read_text()), "methods": methods}))

    soup, hsic, cka = {"penalty": {"kind": "none"}}, {"kind": "hsic", "weight": 1.0}, {"kind": "cka", "weight": 1.0}
    assert plan({"soup": soup, "mva": {"penalty": hsic}, "mva10": {"penalty": {**hsic, "weight": 10.0}}}).sensitivity_figure
    assert not plan({"soup": soup, "mva": {"penalty": hsic}, "cka10": {"penalty": {**cka, "weight": 10.0}}}).sensitivity_figure
    assert not plan({"soup": soup, "mva": {"penalty": hsic},
                     "line": {"type": "single", "penalty": {**hsic, "weight": 10.0}}}).sensitivity_figure


def test_read_decorrelation_joins_shared_tables_back_to_each_method(tmp_path):
    paths = []
    for seed in ("seed_1", "seed_2"):
        for vector_set, hsic in (("independent", 0.3), ("mva", 0.1)):
            path = tmp_path / seed / "decorrelation" / f"{vector_set}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({**{column: [0.0] for column in table_columns()}, "hsic": [hsic]}).to_parquet(path)
            paths.append(path)
    tables = read_decorrelation(paths, {"mva": "mva", "soup": "independent", "single": "independent", "gone": "x"})
    assert list(tables) == ["mva", "soup", "single"]
    assert tables["soup"] is tables["single"] and list(tables["soup"]["seed"]) == ["seed_1", "seed_2"]
    assert tables["mva"]["hsic"].tolist() == [0.1, 0.1]


def test_read_decorrelation_names_a_table_written_before_the_readings(tmp_path):
    path = tmp_path / "seed_1" / "decorrelation" / "mva.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({column: [0.0] for column in table_columns() if not column.endswith("_reading")}).to_parquet(path)
    with pytest.raises(ValueError, match=r"mva\.parquet: decorrelation table lacks columns \['hsic_lora_a_sigma1_reading'"):
        read_decorrelation([path], {"mva": "mva"})


def test_unknown_method_type_or_name_names_the_culprit(config):
    with pytest.raises(ConfigError, match=r"config key 'methods\.odd\.type': 'nosuch' is not a method type; allowed "
                                          r"values: \['grid', 'single', 'expo', 'modpo', 'replicate', 'planted', 'projection'\]"):
        method_from_section("odd", {"type": "nosuch", "penalty": {"kind": "none"}})
    with pytest.raises(ConfigError, match=r"no method named 'nope'"):
        method_for("nope", config)


BAD = [
    ("lambdas on a grid method", lambda m: m["mva"].update(lambdas=[2.0]), "methods.mva.lambdas", "type 'single'"),
    ("modpo_target on a line method", lambda m: m["single"].update(modpo_target="helpful"),
     "methods.single.modpo_target", "type 'modpo'"),
    ("penalised modpo", lambda m: m["modpo"].update(penalty={"kind": "hsic", "weight": 1.0}),
     "methods.modpo.penalty.kind", "allowed values: ['none']"),
    ("unknown modpo target", lambda m: m["modpo"].update(modpo_target="nosuch"), "methods.modpo.modpo_target",
     "'nosuch' is not a value"),
    ("zero weight", lambda m: m["ortho"]["penalty"].update(weight=0.0), "methods.ortho.penalty.weight", "use kind 'none'"),
    ("planted without c", lambda m: m.update(p={"type": "planted"}), "methods.p.c", "is required for a planted method"),
    ("of an unknown method", lambda m: m.update(p={"type": "projection", "of": "nosuch"}), "methods.p.of",
     "'nosuch' is not a method"),
    ("of a modpo method", lambda m: m.update(p={"type": "projection", "of": "modpo"}), "methods.p.of",
     "'modpo' is a modpo method, which has no value vectors"),
    ("of in a circle", lambda m: m.update(p={"type": "projection", "of": "q"}, q={"type": "planted", "of": "p", "c": 1}),
     "methods.q.of", "'p' leads back to itself: p -> q -> p"),
    ("penalised projection", lambda m: m.update(p={"type": "projection", "penalty": {"kind": "cka", "weight": 1.0}}),
     "methods.p.penalty.kind", "allowed values: ['none']"),
    ("penalised replicate", lambda m: m.update(p={"type": "replicate", "penalty": {"kind": "cka", "weight": 1.0}}),
     "methods.p.penalty.kind", "allowed values: ['none']"),
    ("sides on a grid method", lambda m: m["mva"].update(sides="rows"), "methods.mva.sides", "type 'projection'"),
    ("of on a grid method", lambda m: m["mva"].update(of="soup"), "methods.mva.of", "type 'planted' or 'projection'"),
    ("c on a projection", lambda m: m.update(p={"type": "projection", "c": 1.0}), "methods.p.c", "type 'planted'"),
]


@pytest.mark.parametrize("mutate,key,text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_type_checks_its_section(mutate, key, text):
    raw = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    mutate(raw["methods"])
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(raw))
    assert f"config key '{key}'" in str(err.value) and text in str(err.value)


def test_rules_ask_the_registry_instead_of_naming_method_types():
    types = "|".join(METHOD_TYPES)
    literal = re.compile(rf"""(["'])({types})\1""")
    files = sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]
    found = [f"{path.name}:{i}: {line.strip()}" for path in files
             for i, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, found
    assert "PLAN[" in (REPO / "rules/common.smk").read_text()  # the check above reads the files that use it
