"""The method types of the schema (``methods.<m>.type``): λ combinations of value vectors, and MODPO."""
from __future__ import annotations

from typing import ClassVar

import pandas as pd

from mva_core.config_errors import key_error
from mva_core.grid import GridSettings, grid_points, line_points, modpo_points
from mva_core.methods.base import Method, register_method
from mva_core.methods.chains import (
    INDEPENDENT,
    ModpoJob,
    VectorJob,
    chain_of,
    vector_job,
    vector_path,
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
