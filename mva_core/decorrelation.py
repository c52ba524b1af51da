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
from mva_core.dependence import SCALE_INVARIANT, delta_w_norm, random_like
from mva_core.hsic import delta_w_gram, hsic_delta_w, hsic_lora_a, rbf_kernel_from_gram

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


def _hsic_on_a_rows(u: LoraFactors, v: LoraFactors, sigma: float | str) -> float:
    """The released code's HSIC on A rows, paired by index: NaN between vectors of different ranks (a planted
    vector), where no such pairing exists."""
    return float(hsic_lora_a(u[0], v[0], sigma, "n2")) if u[0].shape == v[0].shape else math.nan


def _hsic_measures() -> dict[str, Callable[[LoraFactors, LoraFactors], float]]:
    measures = {}
    for name, sigma in (("sigma1", 1.0), ("median", "median")):
        measures[f"hsic_lora_a_{name}"] = lambda u, v, sigma=sigma: _hsic_on_a_rows(u, v, sigma)
        measures[f"hsic_delta_w_{name}"] = lambda u, v, sigma=sigma: float(hsic_delta_w(*u, *v, sigma, "n2", None))
    measures["cosine_delta_w"] = cosine_delta_w
    return {name: measures[name] for name in METRICS}


MEASURES = {**_hsic_measures(), **SCALE_INVARIANT}
"""Every dependence measure of the tables: the released-code HSIC forms, cosine, and the scale-invariant ones."""
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


def off_diagonal_kernel(factors: LoraFactors, samples: str, sigma: float | str) -> torch.Tensor:
    """The off-diagonal entries of a vector's RBF kernel on A rows (``lora_a``) or ΔW rows (``delta_w``)."""
    A, B, s = factors
    gram = A.float() @ A.float().T if samples == "lora_a" else delta_w_gram(A, B, s)
    K = rbf_kernel_from_gram(gram, sigma)
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
    randoms = [random_like(u, generator) for _ in range(draws)]
    u_at_v_norms = rescaled_like(u, v)
    record: dict = {"module": module}
    with torch.no_grad():
        for name, measure in MEASURES.items():
            independent = [measure(random, v) for random in randoms]
            value, self_anchor, low, high = measure(u, v), measure(u, u_at_v_norms), min(independent), max(independent)
            record.update({name: value, f"{name}_self": self_anchor, f"{name}_indep_lo": low, f"{name}_indep_hi": high})
            saturated = False
            if name in KERNEL_SETTINGS:
                off_u, off_v = (off_diagonal_kernel(x, *KERNEL_SETTINGS[name]) for x in (u, v))
                record[f"{name}_unsaturated"], record[f"{name}_kernel_std"] = kernel_spread(off_u)
                saturated = record[f"{name}_saturated"] = kernel_collapsed(off_u) or kernel_collapsed(off_v)
            record[f"{name}_discriminates"] = reading(self_anchor, low, high) in (ABOVE, BELOW) and not saturated
            record[f"{name}_reading"] = reading(value, low, high)
    record.update(norm_a=delta_w_norm(u), norm_b=delta_w_norm(v))
    return record


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
