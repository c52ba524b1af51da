"""Decorrelation diagnostics between saved value vectors (LoRA adapters), read straight from disk.

For every LoRA module shared by two adapters: HSIC in both forms of ``mva_core.hsic``, the cosine similarity
of the flattened updates, <ΔW_u, ΔW_v> / (|ΔW_u| |ΔW_v|) with <ΔW_u, ΔW_v> = s_u s_v tr((B_u^T B_v)(A_v A_u^T)),
and the scale-invariant measures of ``mva_core.dependence``; ΔW is never materialised. Each measure comes with
anchors that say whether it can tell dependence at all: its value for u against itself and its range for random
vectors with u's shapes and norms against v; the RBF measures also with their kernel's unsaturated share and spread.

Two readings per measure and module: ``<measure>_discriminates`` (the self anchor lies outside the independent
range, so the measure can tell a dependent pair from an independent one; for an RBF measure also neither vector's
kernel has collapsed to the identity) and ``<measure>_reading`` (``above`` / ``inside`` / ``below`` the independent
range). "Inside" says these vectors look independent by this measure; it means nothing where the measure does not
discriminate. The self anchor is u against u rescaled to v's norms per LoRA factor, so it sits at the same norms as
the pair and the random anchors: measures that are not scale-invariant (σ = 1 HSIC) change with the norms.
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from collections.abc import Callable, Mapping

import pandas as pd
import torch

from mva_core.adapters import LoraFactors, read_value_vector
from mva_core.dependence import SCALE_INVARIANT, cka_of_centred, delta_w_norm, random_like
from mva_core.hsic import (
    centred_kernel,
    delta_w_gram,
    hsic,
    rbf_kernel_from_distances,
    squared_distances,
    two_sigma_squared,
)

METRICS = ("hsic_lora_a_sigma1", "hsic_lora_a_median", "hsic_delta_w_sigma1", "hsic_delta_w_median", "cosine_delta_w")
"""Every table uses these estimator settings, whatever penalty a method trained with, so rows are comparable:
HSIC with σ = 1 (the released code) and with the median heuristic (the code's ``sigma: median``: 2σ² = median
squared distance), biased estimator over n², on all rows."""


def cosine_delta_w(u: LoraFactors, v: LoraFactors) -> float:
    """Cosine of the flattened ΔW_u and ΔW_v via traces of r × r products (fp64; NaN when either update is zero)."""
    (A_u, B_u, s_u), (A_v, B_v, s_v) = [(A.double(), B.double(), s) for A, B, s in (u, v)]

    def inner(A_x, B_x, s_x, A_y, B_y, s_y) -> float:
        return s_x * s_y * float(((B_x.T @ B_y) * (A_y @ A_x.T).T).sum())  # tr(XY) = sum(X * Y^T)

    norm_sq = inner(A_u, B_u, s_u, A_u, B_u, s_u) * inner(A_v, B_v, s_v, A_v, B_v, s_v)
    return inner(A_u, B_u, s_u, A_v, B_v, s_v) / math.sqrt(norm_sq) if norm_sq > 0 else math.nan


class VectorKernels:
    """One LoRA vector's Gram matrices and RBF kernels, each built once: a table compares every vector with the
    other vector, its self anchor and 20 random anchors, under several measures that share kernels. The kernels are
    the very tensors ``mva_core.hsic``'s functions build, so every measure gives the same bits either way."""

    def __init__(self, factors: LoraFactors) -> None:
        self.factors = factors
        self._built: dict[tuple, torch.Tensor | float] = {}

    def _once(self, key: tuple, build: Callable[[], torch.Tensor | float]) -> torch.Tensor | float:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def gram(self, samples: str) -> torch.Tensor:
        """Gram matrix of the A rows (``lora_a``) or of the ΔW rows (``delta_w``)."""
        A, B, s = self.factors
        return self._once(("gram", samples), lambda: A.float() @ A.float().T if samples == "lora_a"
                          else delta_w_gram(A, B, s))

    def distances(self, samples: str) -> torch.Tensor:
        return self._once(("distances", samples), lambda: squared_distances(self.gram(samples).float()))

    def bandwidth(self, samples: str, sigma: float | str) -> torch.Tensor | float:
        return self._once(("bandwidth", samples, sigma), lambda: two_sigma_squared(self.distances(samples), sigma))

    def kernel(self, samples: str, sigma: float | str, minus_one: bool = False) -> torch.Tensor:
        """As ``rbf_kernel_from_gram(gram, sigma, minus_one=minus_one)``, from the cached distances and bandwidth."""
        return self._once(("kernel", samples, sigma, minus_one), lambda: rbf_kernel_from_distances(
            self.distances(samples), self.bandwidth(samples, sigma), minus_one=minus_one))

    def centred(self, samples: str, sigma: float | str) -> torch.Tensor:
        return self._once(("centred", samples, sigma), lambda: centred_kernel(self.kernel(samples, sigma)))


PairMeasure = Callable[[VectorKernels, VectorKernels], float]


def _hsic_pair(samples: str, sigma: float | str) -> PairMeasure:
    """HSIC (biased, over n²) with RBF kernels on the given rows; on A rows the released code's pairing by index,
    NaN between vectors of different ranks (a planted vector), where no such pairing exists."""
    def measure(u: VectorKernels, v: VectorKernels) -> float:
        if samples == "lora_a" and u.factors[0].shape != v.factors[0].shape:
            return math.nan
        return float(hsic(u.kernel(samples, sigma, minus_one=True), v.kernel(samples, sigma, minus_one=True)))
    return measure


def _on_factors(measure: Callable[[LoraFactors, LoraFactors], float]) -> PairMeasure:
    return lambda u, v: measure(u.factors, v.factors)


def _pair_measures() -> dict[str, PairMeasure]:
    measures = {f"hsic_{samples}_{name}": _hsic_pair(samples, sigma)
                for samples in ("lora_a", "delta_w") for name, sigma in (("sigma1", 1.0), ("median", "median"))}
    measures.update({name: _on_factors(measure) for name, measure in SCALE_INVARIANT.items()},
                    cosine_delta_w=_on_factors(cosine_delta_w),
                    cka_rbf_delta_w=lambda u, v: cka_of_centred(u.centred("delta_w", "median"),
                                                                v.centred("delta_w", "median")))
    return {name: measures[name] for name in (*METRICS, *SCALE_INVARIANT)}


PAIR_MEASURES = _pair_measures()
"""Every dependence measure of the tables, on ``VectorKernels``: the released-code HSIC forms, cosine, and the
scale-invariant ones (``cka_rbf_delta_w`` from the cached centred kernels, the same bits as ``rbf_cka``)."""
MEASURES: dict[str, Callable[[LoraFactors, LoraFactors], float]] = {
    name: (lambda u, v, measure=measure: measure(VectorKernels(u), VectorKernels(v)))
    for name, measure in PAIR_MEASURES.items()}
"""The same measures on two vectors' LoRA factors."""
KERNEL_SETTINGS = {"hsic_lora_a_sigma1": ("lora_a", 1.0), "hsic_lora_a_median": ("lora_a", "median"),
                   "hsic_delta_w_sigma1": ("delta_w", 1.0), "hsic_delta_w_median": ("delta_w", "median"),
                   "cka_rbf_delta_w": ("delta_w", "median")}
"""RBF-kernel measures: the samples and bandwidth their kernels use (for the saturation column)."""
ANCHOR_DRAWS = 20
ANCHORS = ("self", "indep_lo", "indep_hi")
ABOVE, INSIDE, BELOW, UNDEFINED = "above", "inside", "below", "undefined"
"""Readings: where a measure lies against its independent range (``undefined``: the measure is NaN)."""
UNINFORMATIVE, MIXED = "uninformative", "mixed"
"""Summary readings over modules: the measure does not discriminate; no position holds over half the modules."""
COLLAPSED_SHARE = 0.01
"""A kernel has collapsed to the identity when fewer than this share of its off-diagonal entries exceed 0.05."""


def table_columns() -> list[str]:
    """Columns of a decorrelation table, in order."""
    columns = ["module", "value_a", "value_b"]
    for name in MEASURES:
        columns += [name, *(f"{name}_{anchor}" for anchor in ANCHORS)]
        if name in KERNEL_SETTINGS:
            columns += [f"{name}_unsaturated", f"{name}_kernel_std", f"{name}_saturated"]
        columns += [f"{name}_discriminates", f"{name}_reading"]
    return [*columns, "norm_a", "norm_b"]


def off_diagonal(K: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a kernel matrix."""
    return K[~torch.eye(K.shape[0], dtype=torch.bool)]


def kernel_spread(off: torch.Tensor) -> tuple[float, float]:
    """Of off-diagonal kernel entries: the share in (0.05, 0.95) (near 0: saturated at 0 or 1) and their
    standard deviation (near 0: a constant kernel, every pair of samples equally far apart)."""
    return float(((off > 0.05) & (off < 0.95)).float().mean()), float(off.std())


def kernel_collapsed(off: torch.Tensor) -> bool:
    """Whether a kernel is (nearly) the identity: every sample looks unrelated to every other, so HSIC is the same
    constant whatever the other vector. (Entries near 1 are no such loss: HSIC uses K − 1 at full precision.)"""
    return float((off > 0.05).float().mean()) < COLLAPSED_SHARE


def rescaled_like(u: LoraFactors, v: LoraFactors) -> LoraFactors:
    """u with A and B rescaled to the Frobenius norms of v's A and B, and v's scaling: u's directions at v's norms."""
    def rescale(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        norm = float(x.double().norm())
        return x * (float(target.double().norm()) / norm) if norm > 0 else x

    return rescale(u[0], v[0]), rescale(u[1], v[1]), v[2]


def reading(value: float, low: float, high: float) -> str:
    """Where ``value`` lies against the independent range [low, high]."""
    if math.isnan(value):
        return UNDEFINED
    return ABOVE if value > high else BELOW if value < low else INSIDE


def module_record(module: str, u: LoraFactors, v: LoraFactors, draws: int = ANCHOR_DRAWS) -> dict:
    """Every measure between u and v on one module, with its anchors: u against u rescaled to v's factor norms
    (``_self``) and the range over ``draws`` random vectors with u's shapes and norms against v
    (``_indep_lo``/``_indep_hi``, seeded by the module name); for RBF measures u's kernel spread and whether either
    vector's kernel collapsed (``_saturated``); whether the measure discriminates and its reading; both ΔW norms."""
    generator = torch.Generator().manual_seed(zlib.crc32(module.encode()))
    u_k, v_k, self_k = VectorKernels(u), VectorKernels(v), VectorKernels(rescaled_like(u, v))
    record: dict = {"module": module}
    with torch.no_grad():
        independent: dict[str, list[float]] = {name: [] for name in PAIR_MEASURES}
        for _ in range(draws):  # one random vector's kernels alive at a time
            random_k = VectorKernels(random_like(u, generator))
            for name, measure in PAIR_MEASURES.items():
                independent[name].append(measure(random_k, v_k))
        for name, measure in PAIR_MEASURES.items():
            record.update(measure_columns(name, measure(u_k, v_k), measure(u_k, self_k), independent[name], u_k, v_k))
    record.update(norm_a=delta_w_norm(u), norm_b=delta_w_norm(v))
    return record


def measure_columns(name: str, value: float, self_anchor: float, independent: list[float], u: VectorKernels,
                    v: VectorKernels) -> dict:
    """One measure's columns of a record: its value, self anchor and independent range; for an RBF measure u's
    kernel spread and whether either kernel collapsed; whether it discriminates, and its reading."""
    low, high = min(independent), max(independent)
    columns: dict = {name: value, f"{name}_self": self_anchor, f"{name}_indep_lo": low, f"{name}_indep_hi": high}
    saturated = False
    if name in KERNEL_SETTINGS:
        off_u, off_v = (off_diagonal(x.kernel(*KERNEL_SETTINGS[name])) for x in (u, v))
        columns[f"{name}_unsaturated"], columns[f"{name}_kernel_std"] = kernel_spread(off_u)
        saturated = columns[f"{name}_saturated"] = kernel_collapsed(off_u) or kernel_collapsed(off_v)
    columns[f"{name}_discriminates"] = reading(self_anchor, low, high) in (ABOVE, BELOW) and not saturated
    columns[f"{name}_reading"] = reading(value, low, high)
    return columns


def decorrelation_table(adapters: Mapping[str, str | os.PathLike], draws: int = ANCHOR_DRAWS) -> pd.DataFrame:
    """One row per shared LoRA module and pair of values (in the given order): every measure of ``MEASURES`` with
    its anchors (``module_record``) and the ΔW norms; the same estimator settings for every method."""
    if len(adapters) < 2:
        raise ValueError(f"need at least two adapters to compare, got {list(adapters)}")
    loaded = {value: read_value_vector(path) for value, path in adapters.items()}
    records = []
    for value_a, value_b in itertools.combinations(loaded, 2):
        shared = sorted(set(loaded[value_a]) & set(loaded[value_b]))
        if not shared:
            raise ValueError(f"adapters {value_a!r} and {value_b!r} share no LoRA modules")
        for module in shared:
            record = module_record(module, loaded[value_a][module], loaded[value_b][module], draws)
            records.append({**record, "value_a": value_a, "value_b": value_b})
    return pd.DataFrame.from_records(records, columns=table_columns())


def measure_reading(table: pd.DataFrame, measure: str) -> dict[str, float | str]:
    """Over a table's modules: the share where ``measure`` discriminates, the shares above / inside / below the
    independent range, and the reading: ``uninformative`` when it discriminates on fewer than half of the modules,
    else the position of most (over half) of the modules where it does, or ``mixed``."""
    shares = {position: float((table[f"{measure}_reading"] == position).mean()) for position in (ABOVE, INSIDE, BELOW)}
    discriminates = float(table[f"{measure}_discriminates"].mean())
    positions = table.loc[table[f"{measure}_discriminates"], f"{measure}_reading"].value_counts(normalize=True)
    if discriminates < 0.5:
        label = UNINFORMATIVE
    else:
        label = next((str(p) for p, share in positions.items() if share > 0.5 and p != UNDEFINED), MIXED)
    return {"discriminates": discriminates, **shares, "reading": label}


def summarize_decorrelation(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each measure per value pair, with the number of modules averaged."""
    summary = table.groupby(["value_a", "value_b"], sort=False)[list(MEASURES)].mean()
    summary.insert(0, "n_modules", table.groupby(["value_a", "value_b"], sort=False).size())
    return summary.reset_index()
