"""Exact combination of value vectors: SFT + Σ_v λ_v·s_v·B_v·A_v for any real λ (negative and > 1 included).

``ValueMixer`` keeps the value adapters separate (no re-merge per grid point) and lets every row of a batch carry
its own λ, so rows of different grid points share one ``model.generate`` call. ``merge_in_place`` writes the same
sum into the weights (``mva-export``; ``merge_explicit`` into a copy, the reference for tests and benchmarks), and
``stacked_lora`` states it as one LoRA of rank Σ_v r_v (``mva-export --as-lora``). PEFT's
``add_weighted_adapter(..., "linear")`` is avoided on purpose: it combines A's and B's separately and creates cross
terms B_i·A_j.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from mva_core.adapters import LoraFactors, read_value_vector


def load_value_vectors(adapters: Mapping[str, str | Path]) -> dict[str, dict[str, LoraFactors]]:
    """``{value: read_value_vector(dir)}``, failing on an empty mapping."""
    if not adapters:
        raise ValueError("no value vectors given")
    return {value: read_value_vector(folder) for value, folder in adapters.items()}


@dataclass(frozen=True)
class _Slot:
    """One value's factors on one target module."""

    value_index: int
    a: Tensor
    b: Tensor
    scaling: float


class MultiValueLinear(nn.Module):
    """``base(x) + B_cat((A_cat x) * m)``, m repeating each row's λ_v over value v's rank columns.

    A_cat (Σr × d_in) and B_cat (d_out × Σr, scalings folded in) live in the base layer's dtype/device. λ is set per
    batch row (``set_lambdas``), so rows of one batch may sit at different grid points; all-zero λ skips the LoRA path.
    """

    def __init__(self, base: nn.Linear, slots: Sequence[_Slot], name: str = "") -> None:
        super().__init__()
        weight = base.weight
        if not weight.is_floating_point():
            raise TypeError(f"MultiValueLinear {name}: base weight dtype {weight.dtype} is not floating point")
        self.base = base
        self.name = name
        a_cat = torch.cat([s.a.float() for s in slots])
        b_cat = torch.cat([s.b.float() * s.scaling for s in slots], dim=1)
        columns = torch.cat([torch.full((s.a.shape[0],), s.value_index) for s in slots])
        self.register_buffer("a_cat", a_cat.to(weight), persistent=False)
        self.register_buffer("b_cat", b_cat.to(weight), persistent=False)
        self.register_buffer("column_value", columns.to(weight.device), persistent=False)
        self.register_buffer("m", torch.zeros(1, len(columns), dtype=weight.dtype, device=weight.device), persistent=False)
        self.value_indices = sorted({s.value_index for s in slots})
        self.active = False

    def set_lambdas(self, lams: Tensor) -> None:
        """Take λ as (rows, k) over all mixer values; keep this layer's columns."""
        self.m = lams.to(self.a_cat).index_select(1, self.column_value)
        self.active = bool(lams[:, self.value_indices].any().item())

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if not self.active:
            return out
        rows = self.m.shape[0]
        if rows != 1 and (x.dim() < 2 or x.shape[0] != rows):
            raise ValueError(
                f"MultiValueLinear {self.name}: input batch {tuple(x.shape[:-1])} does not match {rows} λ rows "
                "(per-row λ needs a constant batch: no beam search or num_return_sequences > 1)"
            )
        m = self.m.view(rows, *([1] * (x.dim() - 2)), -1)
        lora = nn.functional.linear(nn.functional.linear(x.to(self.a_cat.dtype), self.a_cat) * m, self.b_cat)
        return out + lora.to(out.dtype)


class ValueMixer:
    """Value adapters attached to one model as ``MultiValueLinear`` layers; λ is set per batch row."""

    def __init__(self, model: nn.Module, values: tuple[str, ...], adapters: dict[str, Path],
                 layers: dict[str, MultiValueLinear]) -> None:
        self.model = model
        self._values = values
        self.adapters = adapters
        self.layers = layers
        self._lams = torch.zeros(1, len(values))

    @classmethod
    def attach(cls, model: nn.Module, adapters: Mapping[str, str | Path]) -> ValueMixer:
        """Replace every Linear targeted by any adapter with a ``MultiValueLinear`` (in place); λ starts at 0."""
        vectors = load_value_vectors(adapters)
        values = tuple(vectors)
        slots: dict[str, list[_Slot]] = {}
        for index, value in enumerate(values):
            for module, (a, b, scaling) in vectors[value].items():
                _check_target(model, module, a, b, adapters[value])
                slots.setdefault(module, []).append(_Slot(index, a, b, scaling))
        layers = {}
        for module, module_slots in slots.items():
            layers[module] = MultiValueLinear(model.get_submodule(module), module_slots, name=module)
            _replace(model, module, layers[module])
        return cls(model, values, {v: Path(adapters[v]) for v in values}, layers)

    @property
    def values(self) -> tuple[str, ...]:
        """Value names in λ column order."""
        return self._values

    def set_lambdas(self, lams: Tensor | Sequence[float]) -> None:
        """Set λ: shape (k,) for every row, or (batch, k) for one λ per batch row."""
        lams = torch.as_tensor(lams, dtype=torch.float32).cpu()
        if lams.dim() == 1:
            lams = lams.unsqueeze(0)
        if lams.dim() != 2 or lams.shape[1] != len(self._values):
            raise ValueError(f"λ shape {tuple(lams.shape)} does not match values {self._values} (need (k,) or (batch, k))")
        self._lams = lams
        converted: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        for layer in self.layers.values():
            key = (layer.a_cat.device, layer.a_cat.dtype)
            if key not in converted:
                converted[key] = lams.to(*key)
            layer.set_lambdas(converted[key])

    @contextlib.contextmanager
    def lambdas(self, lams: Tensor | Sequence[float]) -> Iterator[ValueMixer]:
        """Use ``lams`` inside the block, then restore the previous λ."""
        previous = self._lams
        self.set_lambdas(lams)
        try:
            yield self
        finally:
            self.set_lambdas(previous)

    def detach(self) -> nn.Module:
        """Put the original Linear modules back; the mixer is unusable afterwards."""
        for module, layer in self.layers.items():
            _replace(self.model, module, layer.base)
        self.layers = {}
        return self.model


def _check_target(model: nn.Module, module: str, a: Tensor, b: Tensor, folder: str | Path) -> None:
    try:
        target = model.get_submodule(module)
    except AttributeError as err:
        raise ValueError(f"value vector {folder}: target module {module} is not in the model") from err
    if isinstance(target, MultiValueLinear):
        raise ValueError(f"value vector {folder}: module {module} already has a ValueMixer attached")
    if type(target) is not nn.Linear:
        raise TypeError(f"value vector {folder}: target module {module} is {type(target).__name__}, not nn.Linear")
    if a.shape[1] != target.in_features or b.shape[0] != target.out_features:
        raise ValueError(
            f"value vector {folder}: module {module} is {target.out_features}×{target.in_features} "
            f"but the adapter is {b.shape[0]}×{a.shape[1]}"
        )


def _replace(model: nn.Module, module: str, new: nn.Module) -> None:
    parent, _, child = module.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def merge_explicit(model: nn.Module, adapters: Mapping[str, str | Path], lambdas: Mapping[str, float]) -> nn.Module:
    """A deep copy of ``model`` with W + Σ_v λ_v·s_v·B_v·A_v written into the targeted weights (``merge_in_place``)."""
    return merge_in_place(copy.deepcopy(model), adapters, lambdas)


def merge_in_place(model: nn.Module, adapters: Mapping[str, str | Path], lambdas: Mapping[str, float]) -> nn.Module:
    """Add Σ_v λ_v·s_v·B_v·A_v to the targeted weights of ``model`` itself and return it: one module at a time, the
    sum in fp32 and then cast to the weight's dtype, so the only extra memory is one fp32 weight matrix."""
    if set(lambdas) != set(adapters):
        raise ValueError(f"λ keys {sorted(lambdas)} do not match value vectors {sorted(adapters)}")
    by_module: dict[str, list[tuple[float, LoraFactors]]] = {}
    for value, factors in load_value_vectors(adapters).items():
        for module, (a, b, scaling) in factors.items():
            _check_target(model, module, a, b, adapters[value])
            by_module.setdefault(module, []).append((lambdas[value], (a, b, scaling)))
    with torch.no_grad():
        for module, terms in by_module.items():
            weight = model.get_submodule(module).weight
            total = weight.float()
            for lam, (a, b, scaling) in terms:
                total = total.addmm(b.float().to(weight.device), a.float().to(weight.device), alpha=lam * scaling)
            weight.copy_(total)
    return model


def stacked_lora(adapters: Mapping[str, str | Path], lambdas: Mapping[str, float]) -> dict[str, tuple[Tensor, Tensor]]:
    """One LoRA equal to Σ_v λ_v·s_v·B_v·A_v on every module any value targets, as ``{module: (A, B)}`` (fp32) with
    scaling 1: A = [A_1; …; A_k] stacked, B = [λ_1 s_1 B_1, …, λ_k s_k B_k] side by side, so B·A is the sum exactly.
    Value v takes the same r_v columns in every module (its largest rank); a module it lacks, or targets with a
    smaller rank, gets zero blocks there, so every module has rank Σ_v r_v."""
    if set(lambdas) != set(adapters):
        raise ValueError(f"λ keys {sorted(lambdas)} do not match value vectors {sorted(adapters)}")
    vectors = load_value_vectors(adapters)
    width = {value: max(a.shape[0] for a, _, _ in factors.values()) for value, factors in vectors.items()}
    shapes: dict[str, tuple[int, int]] = {}
    for value, factors in vectors.items():
        for module, (a, b, _) in factors.items():
            shape = shapes.setdefault(module, (b.shape[0], a.shape[1]))
            if shape != (b.shape[0], a.shape[1]):
                raise ValueError(f"value vector {adapters[value]}: module {module} is {b.shape[0]}×{a.shape[1]}, "
                                 f"another value's is {shape[0]}×{shape[1]}")
    stacked = {}
    for module, (d_out, d_in) in shapes.items():
        a_blocks, b_blocks = [], []
        for value, factors in vectors.items():
            a_block, b_block = torch.zeros(width[value], d_in), torch.zeros(d_out, width[value])
            if module in factors:
                a, b, scaling = factors[module]
                a_block[: a.shape[0]] = a.float()
                b_block[:, : a.shape[0]] = lambdas[value] * scaling * b.float()
            a_blocks.append(a_block)
            b_blocks.append(b_block)
        stacked[module] = (torch.cat(a_blocks), torch.cat(b_blocks, dim=1))
    return stacked
