"""``mva-export``: the model for one λ of a finished run, as a plain transformers model directory or one LoRA adapter.

    mva-export results/default --method mva --seed 42 --lambda concise=0.7 --lambda positive=1.2 --out my_model

The weights are W + Σ_v λ_v·s_v·B_v·A_v (``combine.merge_in_place``, the same sum the pipeline's mixer computes)
on the model the value vectors were trained on (read from their metadata), so the directory loads with
``AutoModelForCausalLM.from_pretrained`` from anywhere, without PEFT. The model is loaded once, in ``--dtype``
(default: the dtype it was saved in), and each targeted weight gets its sum in fp32, then cast: no second copy.
``--as-lora`` writes the same model as one PEFT adapter of rank Σ_v r_v (``combine.stacked_lora``) on that base
(its hub id where the vectors were trained directly on a hub model). A model card (README.md with YAML metadata)
states the base model, its licence where known, the value vectors with their sha256, λ, and the run's provenance.

The method's vectors are the ones its generation jobs mix: the method registry answers for the run's config (the
one the run recorded, ``mva_core.run_config``). Everything is checked before any file is touched, each failure one
line naming the culprit and the valid choices (exit status 2): an unknown method, seed or value, a MODPO method
(its points are adapters, not λ combinations), a λ given twice or not finite, and an ``--out`` that exists and is
not empty (``--force`` replaces only an earlier export), or lies inside, equals or contains a run directory, a value
vector or the policy model. The model is written to a temporary folder beside ``--out`` and renamed into place.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mva_core.adapters import ADAPTER_WEIGHTS, save_lora_adapter
from mva_core.artifacts import atomic_directory, file_sha256, read_provenance, write_json
from mva_core.config_errors import ConfigError
from mva_core.methods import MethodPlan
from mva_core.model_card import model_card
from mva_core.model_origin import ModelOrigin, adapter_base, lineage_origin
from mva_core.run_config import RUN_CONFIG, RunConfig, read_run_config
from mva_core.training.records import read_metadata

EXPORT_RECORD = "mva_export.json"
"""The record every export holds; ``--force`` replaces only a folder that has one."""
DTYPES = ("float32", "bfloat16", "float16")


class ExportError(ValueError):
    """A bad argument of ``mva-export``; the message is one line naming the culprit and what is allowed."""


@dataclass(frozen=True)
class Export:
    """One checked export: what to merge and where to write it."""

    run_dir: Path
    method: str
    seed: int
    lambdas: dict[str, float]
    adapters: dict[str, Path]
    policy: Path
    out: Path
    dtype: str | None = None
    """Weights' dtype; None: the policy's own (merged), float32 (``as_lora``)."""
    as_lora: bool = False


def plan_export(run_dir: str | Path, method: str, seed: int, lambdas: Mapping[str, float], out: str | Path,
                policy: str | Path | None = None, force: bool = False, configfiles: Sequence[str | Path] = (),
                dtype: str | None = None, as_lora: bool = False) -> Export:
    """Check every argument (ExportError naming the culprit) without writing anything."""
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r} is not a dtype an export writes; choose one of {list(DTYPES)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run directory {run_dir} {'is not a directory' if run_dir.exists() else 'does not exist'} "
                          "(runs are results/<run_name> of the working directory the workflow ran in)")
    try:
        run = read_run_config(run_dir, configfiles)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    plan = MethodPlan.of(run.config)
    _check_method(plan, method)
    _check_seed(run, seed)
    if plan[method].vector_set is None:
        raise ExportError(_modpo_advice(run, plan, method, seed))
    _check_lambdas(lambdas, plan.values, run_dir)
    adapters = {value: run_dir / f"seed_{seed}" / path for value, path in plan[method].adapters().items()}
    for value, folder in adapters.items():
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise ExportError(f"value vector {folder} ({method}, {value}, seed {seed}) is missing: the run has not "
                              f"trained it yet (`mva-status {run_dir}` lists what is missing)")
    policy_dir = _policy_dir(run_dir, adapters, policy)
    out_dir = _checked_out(out, force, {"run directory": run_dir, "policy model": policy_dir,
                                        **{f"value vector {v}": p for v, p in adapters.items()}})
    return Export(run_dir, method, seed, {v: float(lambdas[v]) for v in plan.values}, adapters, policy_dir, out_dir,
                  dtype, as_lora)


def _check_method(plan: MethodPlan, method: str) -> None:
    if method not in plan.methods:
        raise ExportError(f"--method {method!r} is not a method of this run; methods: {plan.vector_methods}"
                          + (f" (MODPO, not exportable: {_modpo_methods(plan)})" if _modpo_methods(plan) else ""))


def _modpo_methods(plan: MethodPlan) -> list[str]:
    return [name for name in plan.methods if name not in plan.vector_methods]


def _check_seed(run: RunConfig, seed: int) -> None:
    if seed not in run.seeds:
        raise ExportError(f"--seed {seed} is not a training seed of {run.run_dir}; seeds: {run.seeds}")


def _modpo_advice(run: RunConfig, plan: MethodPlan, method: str, seed: int) -> str:
    adapters = plan[method].adapters()
    policy = run.run_dir / ("models/sft" if run.config["sft"]["enabled"] else "models/base")
    first = run.run_dir / f"seed_{seed}" / next(iter(adapters.values()))
    weightings = "; ".join(f"{name}: " + ", ".join(f"{v}={w:g}" for v, w in job.weighting.items())
                           for name, job in zip(adapters, plan[method].modpo_jobs()))
    return (f"--method {method!r} is a MODPO method: each of its points is an adapter of its own (one per evaluation "
            f"weighting: {weightings}), not a λ combination of value vectors, so there is no λ to export. Load the "
            f"adapter of a weighting with PEFT instead, e.g. PeftModel.from_pretrained(AutoModelForCausalLM."
            f"from_pretrained('{policy}'), '{first}'), then merge_and_unload(). Methods mva-export combines: "
            f"{plan.vector_methods}")


def _check_lambdas(lambdas: Mapping[str, float], values: Sequence[str], run_dir: Path) -> None:
    for value, number in lambdas.items():
        if value not in values:
            raise ExportError(f"--lambda {value}: {value!r} is not a value of {run_dir}; values: {list(values)}")
        if not math.isfinite(number):
            raise ExportError(f"--lambda {value}={number}: λ must be a finite number")
    missing = [v for v in values if v not in lambdas]
    if missing:
        example = " ".join(f"--lambda {v}=1.0" for v in values)
        raise ExportError(f"--lambda: no λ for {', '.join(missing)}; give one per value of {run_dir}, e.g. {example}")


def _policy_dir(run_dir: Path, adapters: Mapping[str, Path], policy: str | Path | None) -> Path:
    """``policy`` (relative to the current directory), else the model the value vectors were trained on
    (``start_model_dir`` in their metadata, all equal, relative to the run's working directory)."""
    if policy is None:
        recorded = {_start_model_dir(folder) for folder in adapters.values()}
        if len(recorded) != 1:
            raise ExportError(f"the value vectors were trained on different models: {sorted(recorded)}; pass --policy")
        path = Path(recorded.pop())
        workdir_path = run_dir.parent.parent / path
        policy = path if path.is_absolute() or not workdir_path.is_dir() else workdir_path
    policy = Path(policy)
    if not policy.is_dir():
        raise ExportError(f"policy model {policy} does not exist; pass the model the vectors were trained on, --policy DIR")
    return policy


def _start_model_dir(folder: Path) -> str:
    metadata = read_metadata(folder)
    if metadata is None:
        raise ExportError(f"{folder}: no metadata.json naming the model it was trained on; pass --policy DIR")
    return metadata["start_model_dir"]


def _checked_out(out: str | Path, force: bool, protected: Mapping[str, Path]) -> Path:
    """``out`` resolved (symlinks too), if it may be written: outside every run directory and every protected folder,
    and new, empty, or (with ``force``) an earlier export."""
    if not str(out).strip():
        raise ExportError("--out is empty; name a new folder")
    target = Path(out).expanduser().resolve()
    for name, folder in protected.items():
        folder = folder.resolve()
        relation = ("is" if target == folder else "is inside" if folder in target.parents
                    else "contains" if target in folder.parents else None)
        if relation:
            raise ExportError(f"--out {out} {relation} the {name} {folder}; an export never writes into a run: choose "
                              "a new folder outside it")
    run = next((a for a in (target, *target.parents) if _is_run_directory(a)), None)
    if run is not None:
        raise ExportError(f"--out {out} is inside the run directory {run}; an export never writes into a run: choose a "
                          "new folder outside it")
    results = protected["run directory"].resolve().parent
    if results.name == "results" and results in target.parents:
        raise ExportError(f"--out {out} is inside {results}, where the workflow writes its runs (results/<run_name>): "
                          "choose a new folder outside it")
    if target.exists() and not target.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder; choose a new folder")
    entries = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if entries and not force:
        raise ExportError(f"--out {out} exists and is not empty ({len(entries)} entries, e.g. {entries[0]}); choose a "
                          "new folder, or add --force to replace an earlier export")
    if entries and EXPORT_RECORD not in entries:
        raise ExportError(f"--out {out} holds files that are not an export (no {EXPORT_RECORD}; e.g. {entries[0]}); "
                          "--force replaces only an earlier export: choose a new folder")
    return target


def _is_run_directory(folder: Path) -> bool:
    """``results/<run_name>`` of a workflow's working directory (the folders a run writes)."""
    return folder.parent.name == "results" and folder.is_dir() and (
        any((folder / name).exists() for name in (RUN_CONFIG, "data", "models", "logs"))
        or any(folder.glob("seed_*")))


def write_export(export: Export) -> Path:
    """Write the model for ``export.lambdas`` (merged weights, or with ``as_lora`` one adapter) to ``export.out``,
    atomically, with the policy's tokenizer, the record and the model card."""
    from transformers import AutoTokenizer

    origin = lineage_origin(export.policy, export.run_dir.parent.parent)
    with atomic_directory(export.out) as folder:
        # the model is gone when its writer returns: the tokenizer is loaded after it, never beside it
        weights = (_write_lora if export.as_lora else _write_merged)(export, origin, folder)
        AutoTokenizer.from_pretrained(export.policy).save_pretrained(folder)
        record = _record(export, origin.license, **weights)
        write_json(record, folder / EXPORT_RECORD)
        (folder / "README.md").write_text(model_card(record, EXPORT_RECORD))
    return export.out


def _write_merged(export: Export, origin: ModelOrigin, folder: Path) -> dict:
    """Load the policy once (in ``export.dtype``, else the dtype it was saved in), add Σ λ ΔW to its weights in
    place, save it; the record's fields about the weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from mva_core import combine

    dtype = getattr(torch, export.dtype) if export.dtype else "auto"
    model = AutoModelForCausalLM.from_pretrained(export.policy, dtype=dtype)
    combine.merge_in_place(model, export.adapters, export.lambdas)
    model.save_pretrained(folder, safe_serialization=True)
    return {"form": "merged", "dtype": str(model.dtype).removeprefix("torch."), "hub_base_model": origin.hub_id,
            "hub_revision": origin.revision}


def _write_lora(export: Export, origin: ModelOrigin, folder: Path) -> dict:
    """Write Σ λ ΔW as one LoRA adapter of rank Σ r on the policy (``combine.stacked_lora``), in ``export.dtype``
    (default float32); the record's fields about the weights."""
    import torch

    from mva_core import combine

    dtype = export.dtype or "float32"
    factors = {module: (a.to(getattr(torch, dtype)), b.to(getattr(torch, dtype)))
               for module, (a, b) in combine.stacked_lora(export.adapters, export.lambdas).items()}
    base = adapter_base(export.policy)
    save_lora_adapter(folder, factors, base.name_or_path, base.revision)
    return {"form": "lora", "dtype": dtype, "hub_base_model": base.hub_id, "hub_revision": base.revision,
            "rank": next(iter(factors.values()))[0].shape[0]}


def _record(export: Export, licence: str | None, **weights: object) -> dict:
    """``mva_export.json``: the weights' form and dtype, the base (local path, hub id, licence), what was combined."""
    return {**weights, "base_model": str(export.policy.resolve()), "license": licence,
            "base_provenance": read_provenance(export.policy), "method": export.method, "seed": export.seed,
            "lambdas": export.lambdas,
            "value_vectors": {v: {"path": str(p.resolve()), "sha256": file_sha256(p / ADAPTER_WEIGHTS)}
                              for v, p in export.adapters.items()}}


def export_model(run_dir: str | Path, method: str, seed: int, lambdas: Mapping[str, float], out_dir: str | Path,
                 policy_dir: str | Path | None = None, force: bool = False,
                 configfiles: Sequence[str | Path] = (), dtype: str | None = None, as_lora: bool = False) -> Path:
    """Write the model for ``lambdas`` (one per value of the run) to ``out_dir``; ExportError first if any
    argument is wrong."""
    return write_export(plan_export(run_dir, method, seed, lambdas, out_dir, policy_dir, force, configfiles, dtype,
                                    as_lora))


def parse_lambdas(items: Sequence[str]) -> dict[str, float]:
    """``VALUE=NUMBER`` items → {value: λ}; ExportError for a malformed item or a value given twice."""
    lambdas: dict[str, float] = {}
    for item in items:
        value, sep, number = item.partition("=")
        try:
            lam = float(number)
        except ValueError:
            sep = ""
        if not sep or not value:
            raise ExportError(f"--lambda {item!r} must look like VALUE=NUMBER, e.g. helpful=0.7")
        if value in lambdas:
            raise ExportError(f"--lambda {value} is given twice ({lambdas[value]:g} and {number}); give each value once")
        lambdas[value] = lam
    return lambdas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mva-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run, e.g. results/default")
    parser.add_argument("--method", required=True, help="method whose value vectors to combine, e.g. mva or soup")
    parser.add_argument("--seed", type=int, required=True, help="training seed (the seed_<s> folder)")
    parser.add_argument("--lambda", dest="lambdas", action="append", default=[], metavar="VALUE=NUMBER",
                        help="λ of one value (repeat for every value)")
    parser.add_argument("--out", required=True, help="output model directory: new or empty")
    parser.add_argument("--force", action="store_true", help="replace --out if it holds an earlier export")
    parser.add_argument("--policy", default=None, help="model the vectors were trained on (default: from metadata)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="dtype of the written weights (default: the policy's own; float32 with --as-lora)")
    parser.add_argument("--as-lora", action="store_true",
                        help="write one PEFT LoRA adapter (rank Σ r) on the policy instead of merged weights")
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help=f"config files the run was made with (default: the run's own {RUN_CONFIG})")
    args = parser.parse_args(argv)
    try:
        export = plan_export(args.run_dir, args.method, args.seed, parse_lambdas(args.lambdas), args.out,
                             args.policy, args.force, args.configfile, args.dtype, args.as_lora)
    except ExportError as exc:
        print(f"mva-export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {write_export(export)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
