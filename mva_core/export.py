"""``mva-export``: the model for one λ of a finished run, as a plain transformers model directory.

    mva-export results/default --method mva --seed 42 --lambda concise=0.7 --lambda positive=1.2 --out my_model

The weights are W + Σ_v λ_v·s_v·B_v·A_v (``combine.merge_explicit``, the same sum the pipeline's mixer computes)
on the model the value vectors were trained on (read from their metadata), so the directory loads with
``AutoModelForCausalLM.from_pretrained`` from anywhere, without PEFT. A model card (README.md) states the base
model, the value vectors with their sha256, λ, and the run's provenance.

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

from mva_core.adapters import ADAPTER_WEIGHTS
from mva_core.artifacts import atomic_directory, file_sha256, read_provenance, write_json
from mva_core.config_errors import ConfigError
from mva_core.methods import MethodPlan
from mva_core.run_config import RUN_CONFIG, RunConfig, read_run_config
from mva_core.training.records import read_metadata

EXPORT_RECORD = "mva_export.json"
"""The record every export holds; ``--force`` replaces only a folder that has one."""


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


def plan_export(run_dir: str | Path, method: str, seed: int, lambdas: Mapping[str, float], out: str | Path,
                policy: str | Path | None = None, force: bool = False, configfiles: Sequence[str | Path] = ()) -> Export:
    """Check every argument (ExportError naming the culprit) without writing anything."""
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
    return Export(run_dir, method, seed, {v: float(lambdas[v]) for v in plan.values}, adapters, policy_dir, out_dir)


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
    """Merge the value vectors into the policy at λ and write the model directory (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mva_core.combine import merge_explicit

    model = AutoModelForCausalLM.from_pretrained(export.policy, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(export.policy)
    merged = merge_explicit(model, export.adapters, export.lambdas)
    card = {"base_model": str(export.policy.resolve()), "base_provenance": read_provenance(export.policy),
            "method": export.method, "seed": export.seed, "lambdas": export.lambdas,
            "value_vectors": {v: {"path": str(p.resolve()), "sha256": file_sha256(p / ADAPTER_WEIGHTS)}
                              for v, p in export.adapters.items()}}
    with atomic_directory(export.out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(card, tmp / EXPORT_RECORD)
        (tmp / "README.md").write_text(_model_card(card))
    return export.out


def export_model(run_dir: str | Path, method: str, seed: int, lambdas: Mapping[str, float], out_dir: str | Path,
                 policy_dir: str | Path | None = None, force: bool = False,
                 configfiles: Sequence[str | Path] = ()) -> Path:
    """Write the merged model for ``lambdas`` (one per value of the run) to ``out_dir``; ExportError first if any
    argument is wrong."""
    return write_export(plan_export(run_dir, method, seed, lambdas, out_dir, policy_dir, force, configfiles))


def _model_card(card: Mapping) -> str:
    lam = ", ".join(f"λ_{v} = {x:g}" for v, x in card["lambdas"].items())
    lines = [f"# MVA model: {card['method']}, seed {card['seed']}, {lam}", "",
             "W = W_base + Σ_v λ_v·ΔW_v, written into the weights (loads with `AutoModelForCausalLM.from_pretrained`).",
             "", f"- base model: `{card['base_model']}`"]
    lines += [f"- value vector `{v}`: `{info['path']}` (adapter sha256 `{info['sha256']}`)"
              for v, info in card["value_vectors"].items()]
    lines += ["", f"Full record (base model provenance included): `{EXPORT_RECORD}`.", ""]
    return "\n".join(lines)


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
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help=f"config files the run was made with (default: the run's own {RUN_CONFIG})")
    args = parser.parse_args(argv)
    try:
        export = plan_export(args.run_dir, args.method, args.seed, parse_lambdas(args.lambdas), args.out,
                             args.policy, args.force, args.configfile)
    except ExportError as exc:
        print(f"mva-export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {write_export(export)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
