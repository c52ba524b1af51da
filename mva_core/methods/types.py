"""The method types of the schema (``methods.<m>.type``): λ combinations of value vectors (trained, replicated,
projected or planted), and MODPO."""
from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pandas as pd

from mva_core.config_errors import key_error
from mva_core.grid import GridSettings, grid_points, line_points, modpo_points
from mva_core.methods.base import Method, method_from_section, register_method
from mva_core.methods.chains import (
    INDEPENDENT,
    DerivedJob,
    ModpoJob,
    PlantedJob,
    ProjectionJob,
    VectorJob,
    chain_of,
    vector_job,
    vector_path,
    vector_set_paths,
)
from mva_core.penalty_kinds import unpenalised_kinds


class VectorMethod(Method):
    """Models base + Σ_v λ_v ΔW_v from one vector per value, trained with the method's penalty."""

    efficacy = True

    @property
    def vector_set(self) -> str:
        return self.name if self.penalty_kind.penalised else INDEPENDENT

    def vector_chain(self, value: str) -> str:
        """The chain whose directory holds its vector for ``value``."""
        return chain_of(self.vector_set, value, self.values)

    def vector_jobs(self) -> tuple[VectorJob, ...]:
        return tuple(vector_job(self.vector_chain(v), v, self.values, self.penalty) for v in self.values)

    def adapters(self) -> dict[str, str]:
        return {value: vector_path(self.vector_set, value, self.values) for value in self.values}


@register_method
class GridMethod(VectorMethod):
    """MVA and soups: every point of ``evaluation.grid``."""

    type = "grid"
    point_kind = "grid"
    interference = True

    def points(self, grid: GridSettings, seed: int = 0) -> pd.DataFrame:
        return grid_points(grid, self.values, seed)

    @property
    def baseline(self) -> bool:
        return not self.penalty_kind.penalised

    @property
    def heatmap(self) -> bool:
        return len(self.values) == 2

    @property
    def sensitivity(self) -> bool:
        return self.penalty_kind.in_sensitivity

    @property
    def sensitivity_weight(self) -> float | None:
        return self.penalty_kind.sweep_weight(self.penalty)


class LineMethod(VectorMethod):
    """Points along each value vector's own λ line (and, with ``diagonal``, along their sum)."""

    options = ("lambdas",)
    diagonal: ClassVar[bool]

    def default_lambdas(self, grid: GridSettings) -> tuple[float, ...]:
        raise NotImplementedError

    def points(self, grid: GridSettings, seed: int = 0) -> pd.DataFrame:
        lambdas = self.section.get("lambdas") or self.default_lambdas(grid)
        return line_points(lambdas, self.values, diagonal=self.diagonal, kind=self.point_kind)


@register_method
class SingleMethod(LineMethod):
    """Each value vector alone along its own λ line (paper Fig. 5); default λ: ``evaluation.grid.lambdas``."""

    type = "single"
    point_kind = "line"
    diagonal = False

    def default_lambdas(self, grid: GridSettings) -> tuple[float, ...]:
        return tuple(grid.lambdas)


@register_method
class ExpoMethod(LineMethod):
    """ExPO-style extrapolation along each value vector and along their sum, λ beyond 1."""

    type = "expo"
    point_kind = "expo"
    diagonal = True
    interference = True
    LAMBDAS: ClassVar[tuple[float, ...]] = (0.5, 1.0, 1.5, 2.0)

    def default_lambdas(self, grid: GridSettings) -> tuple[float, ...]:
        return self.LAMBDAS


@register_method
class ModpoMethod(Method):
    """MODPO: one adapter per evaluation weighting, trained on ``target``'s pairs with the other values' implicit
    DPO rewards (their penalty-free value vectors) as the margin."""

    type = "modpo"
    point_kind = "modpo"
    options = ("modpo_target",)

    @property
    def target(self) -> str:
        """The value it trains on (default: the last value in training order)."""
        return self.section.get("modpo_target") or self.values[-1]

    def vector_jobs(self) -> tuple[VectorJob, ...]:
        """The penalty-free vectors of the other values (the margins' implicit reward models)."""
        return tuple(vector_job(INDEPENDENT, v, self.values, {}) for v in self.values if v != self.target)

    def modpo_jobs(self) -> tuple[ModpoJob, ...]:
        return tuple(ModpoJob(self.name, i, self.target, dict(zip(self.values, w)))
                     for i, w in enumerate(self.weightings))

    def points(self, grid: GridSettings, seed: int = 0) -> pd.DataFrame:
        return modpo_points(self.weightings, self.values)

    def adapters(self) -> dict[str, str]:
        return {f"w{job.index}": job.path for job in self.modpo_jobs()}

    @classmethod
    def mixer_lambdas(cls, points: pd.DataFrame) -> pd.DataFrame:
        """Its λ columns hold the weighting: each point switches on its own adapter instead (one-hot)."""
        adapters = sorted(a for a in points["adapter"].unique() if a)
        onehot = {f"lam_{a}": (points["adapter"] == a).astype(float) for a in adapters}
        return pd.DataFrame({"point_id": points["point_id"], **onehot})

    def check(self) -> None:
        super().check()
        kind = self.penalty_kind
        if kind.penalised:
            raise key_error(f"methods.{self.name}.penalty.kind", f"{kind.name!r} is not allowed for a modpo method "
                                                                 "(its margins use the penalty-free value vectors); "
                                                                 f"allowed values: {unpenalised_kinds()}")
        if self.target not in self.values:
            raise key_error(f"methods.{self.name}.modpo_target", f"{self.target!r} is not a value; allowed values: "
                                                                 f"{list(self.values)}")
        for i, weighting in enumerate(self.weightings):
            if weighting[self.values.index(self.target)] <= 0:
                raise key_error(f"evaluation.weightings[{i}]", f"gives modpo target {self.target!r} weight 0 "
                                                              f"(methods.{self.name}); MODPO divides by it")


def _penalty_free(method: Method, why: str) -> None:
    """A ConfigError unless ``method`` is penalty-free (``why``: what its vectors are)."""
    kind = method.penalty_kind
    if kind.penalised:
        raise key_error(f"methods.{method.name}.penalty.kind", f"{kind.name!r} is not allowed for a {method.type} "
                                                               f"method ({why}); allowed values: {unpenalised_kinds()}")


class OwnVectorSet:
    """A method evaluated with a vector set of its own (its name) that is neither a penalty-free baseline nor a
    sensitivity sweep: the replicate and the derived (planted, projected) vectors."""

    name: str

    @property
    def vector_set(self) -> str:
        return self.name

    @property
    def baseline(self) -> bool:
        return False

    @property
    def sensitivity(self) -> bool:
        return False


@register_method
class ReplicateMethod(OwnVectorSet, GridMethod):
    """Soup with the later values' vectors trained again from another initialisation (seeded by the method's name
    too): a penalty-free replicate, for the null control ``replicate − soup``."""

    type = "replicate"

    def vector_jobs(self) -> tuple[VectorJob, ...]:
        first, *later = self.values
        return (vector_job(INDEPENDENT, first, self.values, {}),
                *(VectorJob(self.name, value, init_tag=(self.type, self.name)) for value in later))

    def check(self) -> None:
        super().check()
        _penalty_free(self, "it replicates the penalty-free vectors")


class DerivedMethod(OwnVectorSet, GridMethod):
    """Models from vectors computed, without training, from the vectors of method ``of`` (default: the penalty-free
    vectors): its first value's vector as it is, each later value's from that value's and the earlier values'."""

    options = ("of",)

    @property
    def source(self) -> Method | None:
        """The method named by ``of`` (None: the penalty-free vectors)."""
        name = self.section.get("of")
        return None if name is None else method_from_section(name, self.methods[name], self.values, self.weightings,
                                                             self.methods)

    @property
    def compared_with(self) -> str | None:
        return self.section.get("of")

    def source_adapters(self) -> dict[str, str]:
        """Value -> directory of the vectors it is computed from."""
        source = self.source
        return source.adapters() if source is not None else vector_set_paths(INDEPENDENT, self.values)

    def derived_job(self, value: str, source: str, earlier: Mapping[str, str]) -> DerivedJob:
        raise NotImplementedError

    def derived_jobs(self) -> tuple[DerivedJob, ...]:
        """One job per later value: from its vector and the earlier values' vectors."""
        sources = self.source_adapters()
        return tuple(self.derived_job(value, sources[value], {u: sources[u] for u in self.values[:i]})
                     for i, value in enumerate(self.values) if i > 0)

    def vector_jobs(self) -> tuple[VectorJob, ...]:
        """The trained vectors it is computed from."""
        source = self.source
        return source.vector_jobs() if source is not None else tuple(
            vector_job(INDEPENDENT, value, self.values, {}) for value in self.values)

    def adapters(self) -> dict[str, str]:
        first = self.values[0]
        return {first: self.source_adapters()[first], **{job.value: job.path for job in self.derived_jobs()}}

    def check(self) -> None:
        super().check()
        _penalty_free(self, "its vectors are computed from method 'of', not trained")
        seen = [self.name]
        method: Method = self
        while (name := method.section.get("of")) is not None:
            if name not in self.methods:
                raise key_error(f"methods.{method.name}.of", f"{name!r} is not a method; allowed values: "
                                                             f"{sorted(set(self.methods) - {method.name})}")
            if name in seen:
                raise key_error(f"methods.{method.name}.of", f"{name!r} leads back to itself: {' -> '.join([*seen, name])}")
            method = method_from_section(name, self.methods[name], self.values, self.weightings, self.methods)
            if method.vector_set is None:
                raise key_error(f"methods.{seen[-1]}.of", f"{name!r} is a {method.type} method, which has no value "
                                                          "vectors to build on")
            seen.append(name)


@register_method
class PlantedMethod(DerivedMethod):
    """A control of known extra interference: each later value's vector minus ``c`` times the earlier values'
    vectors, as one exact LoRA (``mva_core.derived_vectors``); rows against other methods claim more interference."""

    type = "planted"
    options = ("of", "c")
    planted_interference = True

    def derived_job(self, value: str, source: str, earlier: Mapping[str, str]) -> PlantedJob:
        return PlantedJob(self.name, value, source, earlier, c=float(self.section["c"]))

    def planted_jobs(self) -> tuple[PlantedJob, ...]:
        return self.derived_jobs()

    def check(self) -> None:
        if self.section.get("c") is None:
            raise key_error(f"methods.{self.name}.c", "is required for a planted method: the multiple of the earlier "
                                                      "values' vectors subtracted (a number > 0)")
        super().check()


@register_method
class ProjectionMethod(DerivedMethod):
    """A post-hoc decorrelation baseline: each later value's vector projected off the earlier values' column spaces
    (``sides: columns``), row spaces (``rows``) or both (default) per LoRA module (``mva_core.derived_vectors``)."""

    type = "projection"
    options = ("of", "sides")
    DEFAULT_SIDES: ClassVar[str] = "both"

    def derived_job(self, value: str, source: str, earlier: Mapping[str, str]) -> ProjectionJob:
        return ProjectionJob(self.name, value, source, earlier, sides=self.section.get("sides") or self.DEFAULT_SIDES)

    def projection_jobs(self) -> tuple[ProjectionJob, ...]:
        return self.derived_jobs()
