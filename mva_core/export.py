"""``mva-export``: the model for one λ of a finished run, as a plain transformers model directory.

    mva-export results/default --method mva --seed 42 --lambda concise=0.7 --lambda positive=1.2 --out my_model

The weights are W + Σ_v λ_v·s_v·B_v·A_v (``combine.merge_explicit``, the same sum the pipeline's mixer computes)
on the model the value vectors were trained on (read from their metadata), so the directory loads with
``AutoModelForCausalLM.from_pretrained`` from anywhere, without PEFT. A model card (README.md) states the base
model, the value vectors with their sha256, λ, and the run's provenance.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mva_core.adapters import ADAPTER_WEIGHTS
from mva_core.artifacts import atomic_directory, file_sha256, read_provenance, write_json
from mva_core.combine import merge_explicit
from mva_core.methods import INDEPENDENT
from mva_core.training.records import read_metadata


def vector_dirs(run_dir: Path, method: str, seed: int) -> dict[str, Path]:
    """Value → the adapter ``method`` uses at ``seed``: its own chain's vector, else the shared penalty-free one
    (first value of a chain, penalty-free methods)."""
    root = run_dir / f"seed_{seed}" / "value_vectors"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no value vectors for seed {seed} in run {run_dir}")
    values = sorted(p.name for p in (root / INDEPENDENT).iterdir() if (p / ADAPTER_WEIGHTS).is_file())
    found = {}
    for value in values:
        own = root / method / value
        found[value] = own if (own / ADAPTER_WEIGHTS).is_file() else root / INDEPENDENT / value
    if not found:
        raise FileNotFoundError(f"{root / INDEPENDENT}: no value vectors")
    return found


def _policy_dir(adapters: Mapping[str, Path]) -> Path:
    """The model the value vectors were trained on (``start_model_dir`` in their metadata; all must agree)."""
    dirs = {_start_model_dir(folder) for folder in adapters.values()}
    if len(dirs) != 1:
        raise ValueError(f"value vectors were trained on different models: {sorted(dirs)}")
    return Path(dirs.pop())


def _start_model_dir(folder: Path) -> str:
    metadata = read_metadata(folder)
    if metadata is None:
        raise FileNotFoundError(f"{folder}: no metadata.json naming the model it was trained on; pass --policy")
    return metadata["start_model_dir"]


def export_model(run_dir: str | Path, method: str, seed: int, lambdas: Mapping[str, float], out_dir: str | Path,
                 policy_dir: str | Path | None = None) -> Path:
    """Write the merged model for ``lambdas`` (one per value of the run) to ``out_dir`` atomically."""
    run_dir = Path(run_dir)
    adapters = vector_dirs(run_dir, method, seed)
    if set(lambdas) != set(adapters):
        raise ValueError(f"give one λ per value of the run: {sorted(adapters)} (got {sorted(lambdas)})")
    policy = Path(policy_dir) if policy_dir else _policy_dir(adapters)
    if not policy.is_absolute() and not policy.exists():
        policy = run_dir.parent.parent / policy  # recorded relative to the working directory the run used
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    merged = merge_explicit(model, adapters, lambdas)
    card = {"base_model": str(policy.resolve()), "base_provenance": read_provenance(policy), "method": method,
            "seed": seed, "lambdas": dict(lambdas),
            "value_vectors": {v: {"path": str(p.resolve()), "sha256": file_sha256(p / ADAPTER_WEIGHTS)}
                              for v, p in adapters.items()}}
    with atomic_directory(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(card, tmp / "mva_export.json")
        (tmp / "README.md").write_text(_model_card(card))
    return Path(out_dir)


def _model_card(card: Mapping) -> str:
    lam = ", ".join(f"λ_{v} = {x:g}" for v, x in card["lambdas"].items())
    lines = [f"# MVA model: {card['method']}, seed {card['seed']}, {lam}", "",
             f"W = W_base + Σ_v λ_v·ΔW_v, written into the weights (loads with `AutoModelForCausalLM.from_pretrained`).",
             "", f"- base model: `{card['base_model']}`"]
    lines += [f"- value vector `{v}`: `{info['path']}` (adapter sha256 `{info['sha256']}`)"
              for v, info in card["value_vectors"].items()]
    lines += ["", "Full record (base model provenance included): `mva_export.json`.", ""]
    return "\n".join(lines)


def _parse_lambdas(items: Sequence[str]) -> dict[str, float]:
    lambdas = {}
    for item in items:
        value, sep, number = item.partition("=")
        try:
            lambdas[value] = float(number)
        except ValueError:
            sep = ""
        if not sep or not value:
            raise SystemExit(f"mva-export: --lambda {item!r} must look like VALUE=NUMBER, e.g. helpful=0.7")
    return lambdas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mva-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run, e.g. results/default")
    parser.add_argument("--method", required=True, help="method whose value vectors to combine, e.g. mva or soup")
    parser.add_argument("--seed", type=int, required=True, help="training seed (the seed_<s> folder)")
    parser.add_argument("--lambda", dest="lambdas", action="append", default=[], metavar="VALUE=NUMBER",
                        help="λ of one value (repeat for every value)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--policy", default=None, help="model the vectors were trained on (default: from metadata)")
    args = parser.parse_args(argv)
    out = export_model(args.run_dir, args.method, args.seed, _parse_lambdas(args.lambdas), args.out, args.policy)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
