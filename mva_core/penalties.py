"""Decorrelation penalties between the value vector being trained and frozen earlier value vectors.

``collect_lora_pairs`` walks the PEFT model once and caches, per LoRA module and frozen adapter, the A/B weight
Parameters of both adapters; ``DecorrelationPenalty`` then only does tensor maths, so a training step never walks the
module tree again: it computes the frozen adapters' side once and the trained adapter's side every step, batched
over modules of the same shape.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer

from mva_core.dependence import linear_cka
from mva_core.hsic import (
    NORMALIZATIONS,
    centred_kernel,
    check_sigma,
    delta_w_gram,
    hsic_with_centred,
    rbf_kernel_from_gram,
    symmetric_gram,
)
from mva_core.penalty_kinds import KINDS

PENALTY_KINDS = tuple(KINDS)
HSIC_FORMS = ("lora_a", "delta_w")
PEFT_PREFIX = "base_model.model."
# sigma="median": the trained side's bandwidth per module comes from at most this many of its n(n-1)/2 pairwise
# distances, a fixed subsample (mva_core.hsic.median_bandwidth): 4096 of 32 640 for delta_w at max_rows 256; lora_a
# (n = r) uses all of them up to r = 91. See DecorrelationPenalty.
MEDIAN_PAIRS = 4096


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


class DecorrelationPenalty:
    """The penalty of ``settings`` summed over ``pairs``: HSIC (``settings.form``) per pair, for
    ``"orthogonality"`` sum |A_v A_u^T| per pair (O-LoRA), for ``"cka"`` the linear CKA of the ΔW rows per pair
    (``mva_core.dependence.linear_cka``: r × r traces, scale-invariant). Built once per training run, called every step;
    unweighted, fp32, scalar; the gradient reaches only the trained adapter.

    HSIC: the frozen adapters never change during training, so their side is computed once, without gradient, and
    cached (rebuilt when the frozen weights move to another device or dtype; build a new instance if they are edited
    in place): each pair's centred kernel H (L - 1) H / n^2, summed over the frozen adapters of a module (HSIC is
    linear in the frozen kernel, and the trained kernel does not depend on it). Every call recomputes the trained
    side with autograd, for all modules of one shape at once (stacked weights, batched matmuls, and
    ``mva_core.hsic.hsic_with_centred``) instead of a Python loop over modules. Orthogonality is one matmul per pair
    whose frozen side costs nothing, so it stays a loop (stacking large A's cost more than it saved).

    With ``sigma="median"`` the trained kernels' bandwidth is the median of a fixed subsample of ``median_pairs``
    pairwise distances per module (``mva_core.hsic.median_bandwidth``; None: all pairs, as ``mva_core.hsic``'s
    estimators do); the frozen side always uses all pairs (computed once). The bandwidth carries no gradient.
    """

    def __init__(
        self, pairs: Sequence[LoraPair], settings: PenaltySettings, median_pairs: int | None = MEDIAN_PAIRS
    ) -> None:
        self.pairs = tuple(pairs)
        self.settings = settings
        self.median_pairs = median_pairs
        if settings.kind == "hsic" and settings.form == "lora_a":
            for pair in self.pairs:
                if pair.frozen_A.shape != pair.A.shape:
                    raise ValueError(
                        f"the lora_a form pairs the rows of A, so both adapters need the same r × d_in A: module "
                        f"{pair.module!r} has {tuple(pair.A.shape)} and {tuple(pair.frozen_A.shape)} "
                        f"({pair.frozen_adapter!r})"
                    )
        by_module: dict[int, list[LoraPair]] = {}  # trained adapter's module -> its pairs (one per frozen adapter)
        for pair in self.pairs:
            by_module.setdefault(id(pair.A), []).append(pair)
        groups: dict[tuple, list[list[LoraPair]]] = {}  # modules stacked together: same shapes (and scaling)
        for module_pairs in by_module.values():
            A, B, rows = module_pairs[0].A, module_pairs[0].B, module_pairs[0].rows
            key = (
                (tuple(A.shape),)
                if settings.form == "lora_a"
                else (tuple(A.shape), tuple(B.shape), None if rows is None else len(rows), module_pairs[0].scaling)
            )
            groups.setdefault(key, []).append(module_pairs)
        self._groups = list(groups.values())
        self._cache_key: tuple | None = None
        self._frozen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def _frozen_kernel(self, pair: LoraPair) -> torch.Tensor:
        """Centred frozen kernel H (L - 1) H / n^2 of one pair (bandwidth from all pairwise distances)."""
        A, B, settings = pair.frozen_A.detach().float(), pair.frozen_B.detach(), self.settings
        gram = A @ A.T if settings.form == "lora_a" else delta_w_gram(A, B, pair.frozen_scaling, pair.rows)
        return centred_kernel(rbf_kernel_from_gram(gram, settings.sigma, minus_one=True), settings.normalization)

    def _frozen_side(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per group: the summed centred frozen kernels (modules × n × n) and, where ``delta_w`` samples rows, the
        rows' indices into the group's stacked B flattened to (modules · d_out) × r."""
        first = self.pairs[0].frozen_A
        if (first.device, first.dtype) == self._cache_key:
            return self._frozen
        frozen = []
        with torch.no_grad():
            for group in self._groups:
                kernels = torch.stack([sum(self._frozen_kernel(pair) for pair in pairs) for pairs in group])
                rows = None
                if self.settings.form == "delta_w" and group[0][0].rows is not None:
                    d_out = group[0][0].B.shape[0]
                    rows = torch.cat([pairs[0].rows.to(kernels.device) + g * d_out for g, pairs in enumerate(group)])
                frozen.append((kernels, rows))
        self._cache_key, self._frozen = (first.device, first.dtype), frozen
        return frozen

    def __call__(self) -> torch.Tensor:
        settings = self.settings
        if settings.kind == "none" or not self.pairs:
            return torch.zeros((), device=self.pairs[0].A.device if self.pairs else None)
        if settings.kind == "orthogonality":
            terms = [(pair.A.float() @ pair.frozen_A.detach().float().T).abs().sum() for pair in self.pairs]
            return torch.stack(terms).sum()
        if settings.kind == "cka":
            terms = [linear_cka(pair.A, pair.B, pair.frozen_A.detach(), pair.frozen_B.detach()) for pair in self.pairs]
            return torch.stack(terms).sum()
        terms = []
        for group, (kernels, rows) in zip(self._groups, self._frozen_side()):
            A = torch.stack([pairs[0].A for pairs in group]).float()
            if settings.form == "lora_a":
                gram = symmetric_gram(A)
            else:
                B = torch.stack([pairs[0].B for pairs in group]).float()
                if rows is not None:
                    B = B.flatten(0, 1).index_select(0, rows).view(len(group), -1, B.shape[-1])
                gram = delta_w_gram(A, B, group[0][0].scaling)
            terms.append(hsic_with_centred(gram, kernels, settings.sigma, self.median_pairs))
        return torch.stack(terms).sum()
