"""Decorrelation penalty kinds by name (``methods.<m>.penalty.kind``): what each kind means to the workflow.

A kind says whether it trains its own value vectors and where it appears in the sensitivity analysis; the tensor
maths of each kind is in ``mva_core.penalties`` (which imports torch, so the workflow reads this module instead).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

NO_PENALTY_KIND = "none"


@dataclass(frozen=True)
class PenaltyKind:
    """One penalty kind.

    ``penalised``: a chain's values after the first are trained against the earlier ones (False: the method shares
    the penalty-free ``independent`` vectors). ``series``: label of the kind's curve in ``tables/sensitivity`` from
    the penalty settings (None: not swept; a penalty-free kind is weight 0 of every curve). ``weight_axis``: its
    weight is the x axis of ``figures/sensitivity`` (HSIC's), so its weights count towards drawing that figure.
    """

    name: str
    penalised: bool = True
    series: Callable[[Mapping[str, Any]], str] | None = None
    weight_axis: bool = False

    @property
    def in_sensitivity(self) -> bool:
        """Whether a grid method with this kind is a row of ``tables/sensitivity``."""
        return not self.penalised or self.series is not None

    def sweep_weight(self, penalty: Mapping[str, Any]) -> float | None:
        """The weight this penalty adds to the sensitivity figure's axis (0 when unpenalised; None: not on it)."""
        if not self.penalised:
            return 0.0
        return float(penalty.get("weight", 0.0)) if self.weight_axis else None


KINDS: dict[str, PenaltyKind] = {}


def register_penalty_kind(kind: PenaltyKind) -> PenaltyKind:
    KINDS[kind.name] = kind
    return kind


register_penalty_kind(PenaltyKind(NO_PENALTY_KIND, penalised=False))
register_penalty_kind(PenaltyKind("hsic", weight_axis=True,
                                  series=lambda p: f"{p.get('form', 'lora_a')}, sigma={p.get('sigma', 1.0)}"))
register_penalty_kind(PenaltyKind("orthogonality"))
register_penalty_kind(PenaltyKind("cka", series=lambda p: "cka"))


def unpenalised_kinds() -> list[str]:
    return [name for name, kind in KINDS.items() if not kind.penalised]
