"""Value-vector chains and the training jobs of value vectors and MODPO adapters (paths relative to ``seed_<s>/``).

A *vector set* is the k value vectors one method is evaluated with, named by the chain that trained them:
``independent`` (no penalty) or a penalised method's name. A penalised set's first value has nothing to be
decorrelated from, so it lives under ``independent`` too (baselines share every stage they do not change).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mva_core.penalty_kinds import NO_PENALTY_KIND

INDEPENDENT = "independent"
"""Chain name of value vectors trained with no penalty (first value of every chain, all of penalty-free methods)."""
NO_PENALTY = {"kind": NO_PENALTY_KIND, "weight": 0.0}


def value_order(config: Mapping[str, Any]) -> list[str]:
    """Value names in training order."""
    return sorted(config["values"], key=lambda name: (config["values"][name]["order"], name))


def chain_of(vector_set: str, value: str, values: Sequence[str]) -> str:
    """The chain whose directory holds ``vector_set``'s vector for ``value`` (``values`` in training order)."""
    return INDEPENDENT if vector_set == INDEPENDENT or value == values[0] else vector_set


def vector_path(vector_set: str, value: str, values: Sequence[str]) -> str:
    return f"value_vectors/{chain_of(vector_set, value, values)}/{value}"


def vector_set_paths(vector_set: str, values: Sequence[str]) -> dict[str, str]:
    """Value -> directory of each vector of ``vector_set``."""
    return {value: vector_path(vector_set, value, values) for value in values}


@dataclass(frozen=True)
class VectorJob:
    """One value-vector training job: its chain, its value, the earlier vectors it is decorrelated from (value ->
    directory, frozen while it trains) and its penalty settings."""

    chain: str
    value: str
    frozen_dirs: Mapping[str, str] = field(default_factory=dict, compare=False)
    penalty: Mapping[str, Any] = field(default_factory=lambda: dict(NO_PENALTY), compare=False)
    init_tag: tuple[str, ...] = field(default=(), compare=False)
    """Extra names its LoRA initialisation is seeded by: none (a value's vectors start alike in every chain), or a
    replicate's own."""

    @property
    def frozen_values(self) -> tuple[str, ...]:
        return tuple(self.frozen_dirs)

    @property
    def init_seed_names(self) -> tuple[str, ...]:
        """The names ``value_training.derive_seed(training seed, *names)`` seeds its initialisation with."""
        return ("value", self.value, *self.init_tag)

    @property
    def path(self) -> str:
        return f"value_vectors/{self.chain}/{self.value}"


def vector_job(chain: str, value: str, values: Sequence[str], penalty: Mapping[str, Any]) -> VectorJob:
    """The training job for ``value`` in ``chain``: frozen = the chain's earlier values; ``penalty`` applies to a
    penalised chain only."""
    if chain == INDEPENDENT:
        return VectorJob(chain, value)
    earlier = values[: list(values).index(value)]
    return VectorJob(chain, value, {u: vector_path(chain, u, values) for u in earlier}, dict(penalty))


@dataclass(frozen=True)
class DerivedJob:
    """A value vector computed from trained ones without training (``mva_core.derived_vectors``): from ``source``,
    the vector of its value it is computed from, and ``earlier``, value -> directory of the earlier values' vectors
    (paths relative to ``seed_<s>/``)."""

    method: str
    value: str
    source: str = field(compare=False)
    earlier: Mapping[str, str] = field(compare=False)
    folder: ClassVar[str]

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.method}/{self.value}"


@dataclass(frozen=True)
class ProjectionJob(DerivedJob):
    """``source`` projected off the earlier vectors' spaces on ``sides`` (rows, columns or both)."""

    folder: ClassVar[str] = "projected_vectors"
    sides: str = field(kw_only=True, compare=False)


@dataclass(frozen=True)
class PlantedJob(DerivedJob):
    """``source`` minus ``c`` times the earlier vectors (the planted-interference control)."""

    folder: ClassVar[str] = "planted_vectors"
    c: float = field(kw_only=True, compare=False)


@dataclass(frozen=True)
class ModpoJob:
    """One MODPO adapter: trained on ``target``'s pairs for evaluation weighting ``index`` (value -> weight)."""

    method: str
    index: int
    target: str
    weighting: Mapping[str, float] = field(compare=False)

    @property
    def path(self) -> str:
        return f"modpo_vectors/{self.method}/w{self.index}"

