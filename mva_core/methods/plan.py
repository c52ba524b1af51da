"""What the workflow plans from a run's methods: the questions its rules ask, answered by the method classes."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mva_core.methods.base import Method, method_for
from mva_core.methods.chains import INDEPENDENT, VectorJob, value_order, vector_job, vector_set_paths


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
        """The training job of ``value`` in ``chain`` (a penalised method's name or ``independent``)."""
        penalty = {} if chain == INDEPENDENT else self[chain].penalty
        return vector_job(chain, value, self.values, penalty)

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
        return vector_set_paths(vector_set, self.values)

    @property
    def baselines(self) -> list[str]:
        """Penalty-free baselines other methods' interference is compared with."""
        return [m.name for m in self if m.baseline]

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
