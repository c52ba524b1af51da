"""Decorrelation penalties between the value vector being trained and frozen earlier value vectors.

``collect_lora_pairs`` walks the PEFT model once and caches, per LoRA module and frozen adapter, the A/B weight
Parameters of both adapters; ``decorrelation_penalty`` then only does tensor maths (detaching the frozen weights),
so a training step never walks the module tree again.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer

from mva_core.hsic import NORMALIZATIONS, check_sigma, hsic_delta_w, hsic_lora_a

PENALTY_KINDS = ("none", "hsic", "orthogonality")
HSIC_FORMS = ("lora_a", "delta_w")
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class PenaltySettings:
    """Which decorrelation term is added to the DPO loss, and how it is computed.

    ``max_rows`` caps the output rows used by the ``delta_w`` form (sampled once per module with a fixed seed);
    ``modules`` is an optional regex (``re.search``) on module names restricting which LoRA modules are regularised.
    """

    kind: str = "none"
    weight: float = 0.0
    form: str = "lora_a"
    sigma: float | str = 1.0
    normalization: str = "n2"
    max_rows: int | None = 256
    modules: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PENALTY_KINDS:
            raise ValueError(f"PenaltySettings.kind must be one of {PENALTY_KINDS}, got {self.kind!r}")
        if (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, (int, float))
            or not math.isfinite(self.weight)
            or self.weight < 0
        ):
            raise ValueError(f"PenaltySettings.weight must be a finite number >= 0, got {self.weight!r}")
        if self.form not in HSIC_FORMS:
            raise ValueError(f"PenaltySettings.form must be one of {HSIC_FORMS}, got {self.form!r}")
        try:
            check_sigma(self.sigma)
        except ValueError as err:
            raise ValueError(f"PenaltySettings.sigma: {err}") from None
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"PenaltySettings.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.max_rows is not None and (
            isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 2
        ):
            raise ValueError(f"PenaltySettings.max_rows must be None or an integer >= 2, got {self.max_rows!r}")
        if self.modules is not None:
            try:
                re.compile(self.modules)
            except re.error as err:
                raise ValueError(f"PenaltySettings.modules is not a valid regex ({self.modules!r}): {err}") from None

    @property
    def active(self) -> bool:
        """Whether the penalty contributes to the loss at all."""
        return self.kind != "none" and self.weight != 0


@dataclass
class LoraPair:
    """One LoRA module seen by the trained adapter and one frozen adapter (ΔW = scaling·B·A on both sides).

    All four weights are the model's own Parameters (so the cache follows device moves and checkpoint loads);
    the frozen ones are detached whenever the penalty is computed.
    """

    module: str
    frozen_adapter: str
    A: torch.nn.Parameter
    B: torch.nn.Parameter
    scaling: float
    frozen_A: torch.nn.Parameter
    frozen_B: torch.nn.Parameter
    frozen_scaling: float
    rows: torch.Tensor | None = None


def module_label(name: str) -> str:
    """Module name without PEFT's wrapper prefix (the same label for a live model and a saved adapter)."""
    return name.removeprefix(PEFT_PREFIX)


def sample_rows(
    module: str, d_out: int, max_rows: int | None, device: torch.device | None = None
) -> torch.Tensor | None:
    """Sorted output rows used for ``module`` (None = all): a fixed draw seeded by the module name."""
    if max_rows is None or d_out <= max_rows:
        return None
    generator = torch.Generator().manual_seed(zlib.crc32(module.encode()))
    return torch.randperm(d_out, generator=generator)[:max_rows].sort().values.to(device)


def collect_lora_pairs(
    model: torch.nn.Module,
    trained: str,
    frozen: Sequence[str],
    modules_regex: str | None = None,
    max_rows: int | None = None,
) -> list[LoraPair]:
    """Pair every LoRA module of adapter ``trained`` with each ``frozen`` adapter present in the same module.

    Walks ``model.named_modules()`` once. ``modules_regex`` filters module names (``re.search``); ``max_rows`` sets
    the sampled output rows stored for the ``delta_w`` form. Raises ValueError naming an adapter with no modules.
    """
    if trained in frozen or len(set(frozen)) != len(frozen):
        raise ValueError(
            f"frozen adapters {list(frozen)} must be distinct and differ from the trained adapter {trained!r}"
        )
    pattern = re.compile(modules_regex) if modules_regex is not None else None
    pairs: list[LoraPair] = []
    seen = {name: 0 for name in (trained, *frozen)}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or trained not in module.lora_A:
            continue
        label = module_label(name)
        if pattern is not None and not pattern.search(label):
            continue
        seen[trained] += 1
        A, B = module.lora_A[trained].weight, module.lora_B[trained].weight
        rows = sample_rows(label, B.shape[0], max_rows, B.device)
        for other in frozen:
            if other not in module.lora_A:
                continue
            seen[other] += 1
            pairs.append(
                LoraPair(
                    module=label,
                    frozen_adapter=other,
                    A=A,
                    B=B,
                    scaling=float(module.scaling[trained]),
                    frozen_A=module.lora_A[other].weight,
                    frozen_B=module.lora_B[other].weight,
                    frozen_scaling=float(module.scaling[other]),
                    rows=rows,
                )
            )
    where = f" matching modules regex {modules_regex!r}" if modules_regex is not None else ""
    if seen[trained] == 0:
        raise ValueError(f"trained adapter {trained!r} has no LoRA modules{where}")
    for adapter in frozen:
        if seen[adapter] == 0:
            raise ValueError(
                f"frozen adapter {adapter!r} has no LoRA modules{where} shared with trained adapter {trained!r}"
            )
    return pairs


def decorrelation_penalty(pairs: Sequence[LoraPair], settings: PenaltySettings) -> torch.Tensor:
    """Sum over cached pairs of HSIC (``settings.form``) or, for ``"orthogonality"``, of sum |A_u A_v^T| (O-LoRA).

    The frozen weights are detached, so the gradient reaches only the trained adapter. Unweighted, fp32, scalar.
    """
    if settings.kind == "none" or not pairs:
        device = pairs[0].A.device if pairs else None
        return torch.zeros((), device=device)
    terms = []
    for pair in pairs:
        frozen_A, frozen_B = pair.frozen_A.detach(), pair.frozen_B.detach()
        if settings.kind == "orthogonality":
            terms.append((pair.A.float() @ frozen_A.float().T).abs().sum())
        elif settings.form == "lora_a":
            terms.append(hsic_lora_a(pair.A, frozen_A, settings.sigma, settings.normalization))
        else:
            terms.append(
                hsic_delta_w(
                    pair.A,
                    pair.B,
                    pair.scaling,
                    frozen_A,
                    frozen_B,
                    pair.frozen_scaling,
                    settings.sigma,
                    settings.normalization,
                    pair.rows,
                )
            )
    return torch.stack(terms).sum()
