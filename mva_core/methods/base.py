"""The method protocol (one class per ``methods.<m>.type``) and the registry that looks types up by name."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from mva_core.config_errors import ConfigError, key_error
from mva_core.grid import GridSettings
from mva_core.methods.chains import ModpoJob, PlantedJob, ProjectionJob, VectorJob, value_order
from mva_core.penalty_kinds import KINDS, NO_PENALTY_KIND, PenaltyKind

DEFAULT_TYPE = "grid"
"""Type of a method section without ``type`` (the schema's default)."""


@dataclass(frozen=True)
class Method:
    """One configured method: its ``methods.<name>`` section, the values in training order, the evaluation
    weightings and the run's ``methods`` sections (for a type built on another method's vectors; all three optional
    for the questions that do not need them).

    A subclass answers what the workflow needs to know about its type: the training jobs (value vectors with
    their penalty, MODPO weightings), the evaluation points, the adapters a point mixes, whether it is a
    penalty-free baseline, which tables and figures apply to it, and the checks of its config section.
    """

    name: str
    section: Mapping[str, Any]
    values: tuple[str, ...] = ()
    weightings: tuple[tuple[float, ...], ...] = ()
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    type: ClassVar[str]
    point_kind: ClassVar[str]
    """``kind`` of the points it adds to the SFT and single-vector references."""
    options: ClassVar[tuple[str, ...]] = ()
    """Keys of the section only this type reads (an error on a method of another type)."""
    efficacy: ClassVar[bool] = False
    """Its points put each value vector alone on a λ line from SFT (``tables/efficacy``, ``figures/efficacy``)."""
    interference: ClassVar[bool] = False
    """Its points can include λ_u = 1 alone and with λ_v = 1 (``tables/interference``, ``figures/interference``)."""
    planted_interference: ClassVar[bool] = False
    """Built to interfere more than the vectors it comes from (a control): its interference rows against other
    methods claim more interference, not less."""

    @property
    def penalty(self) -> Mapping[str, Any]:
        return self.section.get("penalty") or {}

    @property
    def penalty_kind(self) -> PenaltyKind:
        kind = self.penalty.get("kind", NO_PENALTY_KIND)
        if kind not in KINDS:
            raise key_error(f"methods.{self.name}.penalty.kind", f"{kind!r} is not allowed; allowed values: {list(KINDS)}")
        return KINDS[kind]

    # Training
    @property
    def vector_set(self) -> str | None:
        """The chain naming the value vectors it is evaluated with (its decorrelation table); None: no value vectors."""
        return None

    def vector_jobs(self) -> tuple[VectorJob, ...]:
        """Value-vector trainings it needs."""
        raise NotImplementedError

    def modpo_jobs(self) -> tuple[ModpoJob, ...]:
        """MODPO adapters it needs (one per evaluation weighting)."""
        return ()

    def projection_jobs(self) -> tuple[ProjectionJob, ...]:
        """Projected value vectors it is evaluated with."""
        return ()

    def planted_jobs(self) -> tuple[PlantedJob, ...]:
        """Planted value vectors it is evaluated with."""
        return ()

    # Evaluation
    def points(self, grid: GridSettings, seed: int = 0) -> pd.DataFrame:
        """The points it is evaluated at (``contracts.POINTS`` without ``method``)."""
        raise NotImplementedError

    def adapters(self) -> dict[str, str]:
        """Adapter name -> directory (relative to ``seed_<s>/``) of every adapter its generation job loads."""
        raise NotImplementedError

    @classmethod
    def mixer_lambdas(cls, points: pd.DataFrame) -> pd.DataFrame:
        """Per point, the λ of each adapter (columns ``lam_<adapter>``) for the generation mixer."""
        return points

    # Reporting
    @property
    def baseline(self) -> bool:
        """A penalty-free baseline: other methods' interference is compared with it."""
        return False

    @property
    def compared_with(self) -> str | None:
        """The method whose vectors it is computed from, which ``tables/interference`` compares it with besides the
        baselines (None: its vectors are trained)."""
        return None

    @property
    def heatmap(self) -> bool:
        """Gets a reward heat map over its λ grid (``figures/heatmap_<name>``)."""
        return False

    @property
    def sensitivity(self) -> bool:
        """A row of ``tables/sensitivity`` (hypervolume and measured dependence by penalty weight)."""
        return False

    @property
    def sensitivity_series(self) -> str | None:
        """Its curve in ``tables/sensitivity`` (None: penalty-free, weight 0 of every curve)."""
        series = self.penalty_kind.series
        return series(self.penalty) if series is not None else None

    @property
    def sensitivity_weight(self) -> float | None:
        """Its weight on the axis of ``figures/sensitivity`` (None: not on it)."""
        return None

    # Validation
    def check(self) -> None:
        """Cross-field checks of its section (after schema validation); raise ``ConfigError`` naming the key."""
        kind, weight = self.penalty_kind, self.penalty.get("weight", 0.0)
        if kind.penalised and weight == 0:
            raise key_error(f"methods.{self.name}.penalty.weight", f"is 0 with kind '{kind.name}': use kind "
                                                                   f"'{NO_PENALTY_KIND}' or a weight > 0")
        for option in dict.fromkeys(o for cls in METHOD_TYPES.values() for o in cls.options):
            if option not in self.options and self.section.get(option) is not None:
                owners = " or ".join(repr(t) for t, cls in METHOD_TYPES.items() if option in cls.options)
                raise key_error(f"methods.{self.name}.{option}", f"applies to methods of type {owners} only; this "
                                                                 f"method's type is '{self.type}'")


METHOD_TYPES: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` the method of type ``cls.type``."""
    METHOD_TYPES[cls.type] = cls
    return cls


def method_class(type_name: str, name: str = "<method>") -> type[Method]:
    """The registered class of ``type_name``; a ConfigError names the method's key and the allowed types."""
    if type_name not in METHOD_TYPES:
        raise key_error(f"methods.{name}.type", f"{type_name!r} is not a method type; allowed values: "
                                                f"{list(METHOD_TYPES)}")
    return METHOD_TYPES[type_name]


def method_from_section(name: str, section: Mapping[str, Any], values: Sequence[str] = (),
                        weightings: Sequence[Sequence[float]] = (),
                        methods: Mapping[str, Mapping[str, Any]] | None = None) -> Method:
    """The method of a ``methods.<name>`` section (``values`` in training order; ``methods``: the run's sections)."""
    cls = method_class(section.get("type", DEFAULT_TYPE), name)
    return cls(name, section, tuple(values), tuple(tuple(w) for w in weightings or ()), dict(methods or {}))


def method_for(name: str, config: Mapping[str, Any]) -> Method:
    """Method ``name`` of a (validated) config, with the run's value order and evaluation weightings."""
    if name not in config["methods"]:
        raise ConfigError(f"config key 'methods': no method named {name!r}; methods: {sorted(config['methods'])}")
    return method_from_section(name, config["methods"][name], value_order(config),
                               config["evaluation"]["weightings"] or (), config["methods"])
