"""The path builder of jobs' logs, benchmarks and checkpoint dirs is injective for every name the config schema
allows, and no job's path lies inside another's (issue 22, item 5)."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mva_core.job_paths import SUFFIXES, job_path

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.schema.yaml").read_text())
VALUE_NAME = SCHEMA["properties"]["values"]["propertyNames"]["pattern"]
METHOD_NAME = SCHEMA["properties"]["methods"]["propertyNames"]["pattern"]
SEED = SCHEMA["properties"]["seed"]


SEEDS = st.integers(SEED["minimum"], SEED["maximum"]).map(lambda s: f"seed{s}")


def _names(pattern: str) -> st.SearchStrategy[str]:
    """Names the schema allows: any, and many built from the same few pieces, so that two often share a prefix."""
    pieces = st.lists(st.sampled_from(["mva", "dw", "harmless", "w0", "seed1", "1", "", "independent"]),
                      min_size=1, max_size=4).map("_".join)
    return st.one_of(st.from_regex(pattern, fullmatch=True), pieces.filter(re.compile(pattern).fullmatch))


def _jobs() -> st.SearchStrategy[tuple[str, str, str]]:
    """Wildcards of a job of the deepest rules (score, train_value_vector): seed, method or chain, value."""
    return st.tuples(SEEDS, _names(METHOD_NAME), _names(VALUE_NAME))


@st.composite
def _jobs_whose_names_join_alike(draw) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """Two jobs whose method and value joined with ``_`` read the same (``mva`` + ``dw_harmless``, ``mva_dw`` +
    ``harmless``): allowed names cut at two different places."""
    pieces = draw(st.lists(_names(VALUE_NAME), min_size=3, max_size=5))  # every join of leading pieces is a name
    cut_a, cut_b = draw(st.lists(st.integers(1, len(pieces) - 1), min_size=2, max_size=2, unique=True))
    seed = draw(SEEDS)
    return tuple((seed, "_".join(pieces[:cut]), "_".join(pieces[cut:])) for cut in (cut_a, cut_b))


def _path(kind: str, wildcards: tuple[str, ...]) -> PurePosixPath:
    return PurePosixPath(job_path("results/r", kind, "score", *wildcards))


@given(st.sampled_from(sorted(SUFFIXES)), _jobs(), _jobs())
def test_paths_of_two_jobs_are_equal_only_for_equal_wildcards_and_never_nested(kind, a, b):
    assert (_path(kind, a) == _path(kind, b)) == (a == b)
    assert _path(kind, a) not in _path(kind, b).parents and _path(kind, b) not in _path(kind, a).parents


@given(st.sampled_from(sorted(SUFFIXES)), _jobs_whose_names_join_alike())
def test_jobs_whose_names_join_alike_get_two_paths(kind, jobs):
    a, b = jobs
    assert a != b and "_".join(a) == "_".join(b)
    assert _path(kind, a) != _path(kind, b)


def test_names_that_joined_to_one_path_get_two():
    assert job_path("r", "logs", "score", "seed1", "mva_dw", "harmless") == "r/logs/score/seed1/mva_dw/harmless.log"
    assert job_path("r", "logs", "score", "seed1", "mva", "dw_harmless") == "r/logs/score/seed1/mva/dw_harmless.log"
    assert job_path("r", "checkpoints", "sft") == "r/checkpoints/sft/main"
    assert job_path("r", "benchmarks", "score", "seed{seed}", "{method}", "{value}") == \
        "r/benchmarks/score/seed{seed}/{method}/{value}.tsv"  # as the rules use it: a pattern per wildcard


@pytest.mark.parametrize("part", ["a/b", "", ".", ".."])
def test_a_part_that_is_not_one_path_component_is_refused(part):
    with pytest.raises(ValueError, match="not one path component"):
        job_path("r", "logs", "score", "seed1", part)
    with pytest.raises(ValueError, match="not one path component"):
        job_path("r", "logs", part)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind 'log' is not one of"):
        job_path("r", "log", "score")
