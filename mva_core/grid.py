"""λ grids: which combinations base + Σ_v λ_v ΔW_v are evaluated, and the evaluation prompts.

Every method's grid always contains the SFT model (all λ = 0, kind ``sft``) and each single value vector
(a unit vector, kind ``single``), so frontiers always have their reference and end points.

Evaluation prompts come from each value's held-out eval split (``evaluation.prompts_per_value``) and/or from
external prompt sets (``evaluation.prompt_sources``, e.g. BeaverTails-Evaluation), sampled with a seed.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mva_core.contracts import EVALUATION_PROMPTS
from mva_core.data import SourceSpec, load_prompts, prompt_id

KIND_PRIORITY = {"sft": 0, "single": 1, "grid": 2, "line": 2, "expo": 2, "modpo": 2}
EXPO_LAMBDAS = (0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class GridSettings:
    """Grid of λ vectors (see ``evaluation.grid`` in the schema)."""

    type: str = "product"
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0)
    points: tuple[tuple[float, ...], ...] = field(default_factory=tuple)
    n_points: int = 10
    low: float = 0.0
    high: float = 1.0


def point_id(lambdas: Sequence[float]) -> str:
    """Readable stable id of a λ vector, e.g. ``0.5_1`` or ``-0.5_1.5``."""
    return "_".join(f"{float(x):g}" for x in lambdas)


def _grid_vectors(settings: GridSettings, k: int, seed: int) -> list[tuple[float, ...]]:
    if settings.type == "product":
        return [tuple(p) for p in itertools.product(settings.lambdas, repeat=k)]
    if settings.type == "list":
        return [tuple(p) for p in settings.points]
    rng = np.random.default_rng(seed)
    if settings.type == "simplex":
        return [tuple(np.round(p, 4)) for p in rng.dirichlet(np.ones(k), size=settings.n_points)]
    if settings.type == "box":
        return [tuple(np.round(p, 4)) for p in rng.uniform(settings.low, settings.high, size=(settings.n_points, k))]
    raise ValueError(f"evaluation.grid.type {settings.type!r} is not one of product, list, simplex, box")


def _table(candidates: Sequence[tuple[tuple[float, ...], str]], values: Sequence[str]) -> pd.DataFrame:
    """Points from (λ vector, kind) candidates: one row per distinct λ, the reference kinds winning ties."""
    best: dict[str, tuple[tuple[float, ...], str]] = {}
    for vec, kind in candidates:
        pid = point_id(vec)
        if pid not in best or KIND_PRIORITY[kind] < KIND_PRIORITY[best[pid][1]]:
            best[pid] = (vec, kind)
    rows = [{"point_id": pid, "kind": kind, **{f"lam_{v}": lam for v, lam in zip(values, vec)}}
            for pid, (vec, kind) in best.items()]
    table = pd.DataFrame(rows)
    table["_rank"] = table["kind"].map(KIND_PRIORITY)
    return table.sort_values(["_rank", "point_id"], ignore_index=True).drop(columns="_rank")


def _references(k: int) -> list[tuple[tuple[float, ...], str]]:
    return [(tuple([0.0] * k), "sft")] + [(tuple(float(i == j) for j in range(k)), "single") for i in range(k)]


def grid_points(settings: GridSettings, values: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Points to evaluate: columns ``point_id``, ``kind`` and one ``lam_<value>`` per value (training order)."""
    k = len(values)
    grid = [(tuple(float(x) for x in vec), "grid") for vec in _grid_vectors(settings, k, seed)]
    return _table(_references(k) + grid, values)


def line_points(lambdas: Sequence[float], values: Sequence[str], diagonal: bool, kind: str) -> pd.DataFrame:
    """Each value vector alone along its own λ line (and, with ``diagonal``, all of them together)."""
    k = len(values)
    candidates = [(tuple(lam * float(i == j) for j in range(k)), kind) for i in range(k) for lam in lambdas]
    if diagonal:
        candidates += [(tuple([float(lam)] * k), kind) for lam in lambdas]
    return _table(_references(k) + candidates, values)


def modpo_points(weightings: Sequence[Sequence[float]], values: Sequence[str]) -> pd.DataFrame:
    """One point per weighting (λ columns hold the weighting), served by MODPO adapter ``w<index>``; plus SFT."""
    table = _table([(tuple([0.0] * len(values)), "sft")], values).assign(adapter="")
    rows = [{"point_id": f"modpo_w{i}", "kind": "modpo", **{f"lam_{v}": float(w) for v, w in zip(values, weighting)},
             "adapter": f"w{i}"} for i, weighting in enumerate(weightings)]
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def method_points(method: Mapping, grid: GridSettings, values: Sequence[str], weightings: Sequence[Sequence[float]],
                  seed: int = 0) -> pd.DataFrame:
    """The points a method (a ``methods.<name>`` config section) is evaluated at."""
    kind = method.get("type", "grid")
    if kind == "grid":
        return grid_points(grid, values, seed)
    if kind == "single":
        return line_points(method.get("lambdas") or grid.lambdas, values, diagonal=False, kind="line")
    if kind == "expo":
        return line_points(method.get("lambdas") or EXPO_LAMBDAS, values, diagonal=True, kind="expo")
    if kind == "modpo":
        return modpo_points(weightings, values)
    raise ValueError(f"method type {kind!r} is not one of grid, single, expo, modpo")


def mixer_lambdas(points: pd.DataFrame) -> pd.DataFrame:
    """λ columns for the generation mixer: MODPO points switch on their own adapter, others use lam_<value>."""
    if "adapter" not in points.columns:
        return points
    adapters = sorted(a for a in points["adapter"].unique() if a)
    onehot = {f"lam_{a}": (points["adapter"] == a).astype(float) for a in adapters}
    return pd.DataFrame({"point_id": points["point_id"], **onehot})


@dataclass(frozen=True, eq=False)
class PromptSet:
    """External evaluation prompts: a loaded ``evaluation.prompt_sources`` entry.

    ``prompts`` has the columns of ``mva_core.data.load_prompts`` (``prompt_id``, ``prompt``, ``category``,
    ``source``); ``n`` of them are evaluated (None: all).
    """

    name: str
    prompts: pd.DataFrame
    n: int | None = None


def load_prompt_set(entry: Mapping, roots: Sequence, on_bad_row: str = "error") -> PromptSet:
    """Load one ``evaluation.prompt_sources`` entry from the data roots (then the hub), as ``values.*.sources``."""
    spec = SourceSpec(path=entry["path"], hub_split=entry.get("hub_split", "train"),
                      hub_data_dir=entry.get("hub_data_dir"))
    prompts = load_prompts(spec, roots, on_bad_row, prompt_field=entry.get("prompt_field", "prompt"),
                           category_field=entry.get("category_field", "category"))
    return PromptSet(entry["name"], prompts, entry.get("n"))


def sample_prompts(prompts: pd.DataFrame, n: int | None, seed: int, stratify: str | None = "category") -> pd.DataFrame:
    """``n`` rows drawn without replacement with ``seed``, kept in their original order (all rows if n is None).

    If the ``stratify`` column exists and is not entirely missing, the draw is stratified: each category (missing
    ones form one stratum) gets its share of ``n`` in proportion to its size, leftover places going to the largest
    remainders (ties broken by the seeded draw), and its rows are drawn uniformly within it.
    """
    if n is None or n >= len(prompts):
        if n is not None and n > len(prompts):
            raise ValueError(f"cannot draw {n} prompts from {len(prompts)}")
        return prompts.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    if stratify is None or stratify not in prompts.columns or prompts[stratify].isna().all():
        chosen = rng.choice(len(prompts), size=n, replace=False)
    else:
        labels = prompts[stratify].astype(object).where(prompts[stratify].notna(), "").astype(str).to_numpy()
        strata = sorted(set(labels))
        members = [np.flatnonzero(labels == label) for label in strata]
        quota = [n * len(rows) // len(prompts) for rows in members]
        remainder = [n * len(rows) % len(prompts) for rows in members]
        tiebreak = rng.permutation(len(strata))
        for i in sorted(range(len(strata)), key=lambda i: (-remainder[i], tiebreak[i]))[: n - sum(quota)]:
            quota[i] += 1
        chosen = np.concatenate([rng.choice(rows, size=q, replace=False) for rows, q in zip(members, quota)])
    return prompts.iloc[np.sort(chosen)].reset_index(drop=True)


def prompt_words(messages: Sequence[Mapping[str, str]]) -> int:
    """Whitespace-separated words over all messages of a prompt."""
    return sum(len(str(m["content"]).split()) for m in messages)


def evaluation_prompts(eval_splits: Mapping[str, pd.DataFrame], per_value: int,
                       prompt_sets: Sequence[PromptSet] = (), seed: int = 0,
                       max_words: int | None = None) -> pd.DataFrame:
    """The prompts every model answers and every reward model scores: the columns of ``contracts.EVALUATION_PROMPTS``.

    First the first ``per_value`` distinct prompts of each value's eval split (its order is a seeded shuffle;
    none when ``per_value`` is 0), ``origin`` = the value, no ``category``; then, per prompt set, ``n`` prompts
    not taken yet, drawn by ``sample_prompts`` with ``seed`` (stratified over ``category``), ``origin`` = the
    set's name. ``prompt`` holds chat messages. With ``max_words``, prompts of more words (``prompt_words``) are
    skipped everywhere (long multi-turn transcripts dominate generation time on a CPU).
    """
    short_enough = (lambda m: True) if max_words is None else (lambda m: prompt_words(m) <= max_words)
    rows, seen = [], set()
    for value, split in (eval_splits.items() if per_value else ()):
        taken = 0
        for messages in split["prompt"]:
            if taken == per_value:
                break
            pid = prompt_id(messages)
            if pid in seen or not short_enough(messages):
                continue
            seen.add(pid)
            rows.append({"prompt_id": pid, "prompt": list(messages), "origin": value, "category": None})
            taken += 1
        if taken < per_value:
            raise ValueError(
                f"value {value!r}: its eval split has only {taken} distinct prompts"
                + (f" of at most {max_words} words" if max_words is not None else "")
                + f" but evaluation.prompts_per_value is {per_value}; lower it or raise data.max_pairs.eval / "
                "data.split.eval" + (" / evaluation.max_prompt_words" if max_words is not None else "")
            )
    for prompt_set in prompt_sets:
        fresh = prompt_set.prompts[~prompt_set.prompts["prompt_id"].isin(seen)
                                   & prompt_set.prompts["prompt"].map(short_enough)]
        if prompt_set.n is not None and prompt_set.n > len(fresh):
            overlap = len(prompt_set.prompts) - len(fresh)
            raise ValueError(
                f"evaluation.prompt_sources {prompt_set.name!r}: n is {prompt_set.n} but it has only {len(fresh)} "
                f"distinct prompts" + (f" ({overlap} more are already taken from the eval splits or an earlier source)"
                                        if overlap else "") + "; lower n or set it to null (all prompts)"
            )
        sample = sample_prompts(fresh, prompt_set.n, seed)
        for pid, messages, category in zip(sample["prompt_id"], sample["prompt"], sample["category"]):
            seen.add(pid)
            rows.append({"prompt_id": pid, "prompt": list(messages), "origin": prompt_set.name, "category": category})
    if not rows:
        raise ValueError("no evaluation prompts: evaluation.prompts_per_value is 0 and no evaluation.prompt_sources "
                         "are given")
    return pd.DataFrame(rows, columns=EVALUATION_PROMPTS.column_names)
