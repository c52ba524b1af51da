"""What the workflow plans from a run's methods: the questions its rules ask, answered by the method classes."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mva_core.config_errors import ConfigError
from mva_core.methods.base import Method, method_for
from mva_core.methods.chains import INDEPENDENT, PlantedJob, ProjectionJob, VectorJob, value_order, vector_job


@dataclass(frozen=True)
class MethodPlan:
    """The methods of a validated config (config order) and the run-level answers built from them."""

    methods: Mapping[str, Method]
    values: tuple[str, ...]
    grid: Mapping[str, Any]
    """The ``evaluation.grid`` section (the λ grid of grid methods, the default λ line of single ones)."""

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> MethodPlan:
        return cls({name: method_for(name, config) for name in config["methods"]}, tuple(value_order(config)),
                   config["evaluation"]["grid"])

    def __getitem__(self, name: str) -> Method:
        return self.methods[name]

    def __iter__(self) -> Iterator[Method]:
        return iter(self.methods.values())

    @property
    def vector_methods(self) -> list[str]:
        """Methods evaluated with value vectors (the others load MODPO adapters)."""
        return [m.name for m in self if m.vector_set is not None]

    @property
    def value_vectors(self) -> list[VectorJob]:
        """Training jobs of the value vectors the methods are evaluated with, sorted by (chain, value)."""
        jobs = {job for name in self.vector_methods for job in self[name].vector_jobs()}
        return sorted(jobs, key=lambda job: (job.chain, job.value))

    @property
    def chains(self) -> list[str]:
        """Every chain a value vector is trained in (``independent`` always)."""
        return sorted({job.chain for m in self for job in m.vector_jobs()} | {INDEPENDENT})

    def vector_job(self, chain: str, value: str) -> VectorJob:
        """The training job of ``value`` in ``chain`` (``independent``, or the name of the method that trains it)."""
        if chain == INDEPENDENT:
            return vector_job(INDEPENDENT, value, self.values, {})
        return _find(self[chain].vector_jobs(), f"value vector {chain}/{value}", chain=chain, value=value)

    @property
    def projection_jobs(self) -> list[ProjectionJob]:
        """Projected value vectors of every method, sorted by (method, value)."""
        return sorted({job for m in self for job in m.projection_jobs()}, key=lambda job: (job.method, job.value))

    def projection_job(self, method: str, value: str) -> ProjectionJob:
        return _find(self[method].projection_jobs(), f"projected vector {method}/{value}", value=value)

    @property
    def planted_jobs(self) -> list[PlantedJob]:
        """Planted value vectors of every method, sorted by (method, value)."""
        return sorted({job for m in self for job in m.planted_jobs()}, key=lambda job: (job.method, job.value))

    def planted_job(self, method: str, value: str) -> PlantedJob:
        return _find(self[method].planted_jobs(), f"planted vector {method}/{value}", value=value)

    @property
    def decorrelation_sets(self) -> dict[str, str]:
        """Method -> the vector set its decorrelation table measures (methods sharing vectors share the table)."""
        return {name: self[name].vector_set for name in self.vector_methods}

    @property
    def vector_sets(self) -> list[str]:
        """Every vector set a decorrelation table is computed for, once each."""
        return sorted(set(self.decorrelation_sets.values()))

    def vector_set_dirs(self, vector_set: str) -> dict[str, str]:
        """Value -> directory (relative to ``seed_<s>/``) of each vector of ``vector_set``."""
        return _find(self, f"vector set {vector_set}", vector_set=vector_set).adapters()

    @property
    def baselines(self) -> list[str]:
        """Penalty-free baselines other methods' interference is compared with."""
        return [m.name for m in self if m.baseline]

    @property
    def interference_references(self) -> dict[str, str]:
        """Method -> the method whose vectors it is computed from (compared with it in ``tables/interference``)."""
        return {m.name: m.compared_with for m in self if m.compared_with is not None}

    @property
    def planted_methods(self) -> list[str]:
        """Controls built to interfere more (their interference rows claim more, not less)."""
        return [m.name for m in self if m.planted_interference]

    @property
    def heatmap_methods(self) -> list[str]:
        return [m.name for m in self if m.heatmap]

    @property
    def efficacy(self) -> bool:
        """Whether any method has efficacy rows (``figures/efficacy``)."""
        return any(m.efficacy for m in self)

    @property
    def interference(self) -> bool:
        """Whether any method can have interference rows (``figures/interference``)."""
        return any(m.interference for m in self)

    @property
    def sensitivity_figure(self) -> bool:
        """``figures/sensitivity`` is drawn when the weight sweep of the vector methods has at least 3 weights."""
        weights = {self[name].sensitivity_weight for name in self.vector_methods}
        return len(weights - {None}) >= 3


Job = TypeVar("Job")


def _find(jobs: Iterable[Job], what: str, **fields: str) -> Job:
    """The one job of ``jobs`` whose attributes equal ``fields``; a ConfigError naming ``what`` when none does."""
    for job in jobs:
        if all(getattr(job, key) == wanted for key, wanted in fields.items()):
            return job
    raise ConfigError(f"{what}: no method of this config plans it")
