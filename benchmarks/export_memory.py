"""Peak memory of ``mva-export`` on SmolLM2-135M: resident memory above the post-import baseline ÷ the exported size.

The base is the pipeline's default (``smollm2_gguf``, de-quantised and saved as fp32 safetensors, as
``results/<run>/models/base``) and a bf16 copy of it; two value vectors (PEFT LoRA r 16, alpha 32, q/k/v/o, random
non-zero B) are saved like a run's. Each arm runs ``mva_core.export.write_export`` in a fresh Python process that
first imports torch, transformers, the Llama model class and ``mva_core.export`` and reads its resident set
(``VmRSS``: the baseline), then exports and reads its peak resident set (``VmHWM``). The ratio is (peak − baseline)
÷ the size of the written weights (``*.safetensors``). Arms:
- ``float32``, ``bfloat16``: the default export of the fp32 and the bf16 base (the base's own dtype);
- ``float32_to_bfloat16``, ``bfloat16_to_float32``: ``--dtype`` changing the dtype;
- ``lora``: ``--as-lora`` (no model is loaded: its line gives the MiB above the baseline, not a ratio);
- ``previous_deepcopy``: the export before issue 25 (fp32 load, ``merge_explicit``'s deep copy, save), for context.

    python benchmarks/export_memory.py                 # ~2 min on 2 CPU cores (most of it converting the GGUF)
    python benchmarks/export_memory.py --workdir /tmp/x   # keeps and reuses the converted base

Last lines: ``export_memory_ratio_<arm>=<x>`` (``export_memory_lora_mib=<x>``); exit 1 if a default arm (float32,
bfloat16) exceeds ``--limit`` (1.3).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ARMS = {  # arm: (base folder, --dtype, --as-lora)
    "float32": ("base_float32", None, False),
    "bfloat16": ("base_bfloat16", None, False),
    "float32_to_bfloat16": ("base_float32", "bfloat16", False),
    "bfloat16_to_float32": ("base_bfloat16", "float32", False),
    "lora": ("base_float32", None, True),
    "previous_deepcopy": ("base_float32", None, False),
}
DEFAULT_ARMS = ("float32", "bfloat16")
LAMBDAS = {"helpful": 0.7, "harmless": 1.2}


def status_mb(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def prepare(workdir: Path) -> None:
    """The fp32 SmolLM2 base, its bf16 copy and two value vectors under ``workdir`` (kept if already there)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mva_core.base_model import BaseModelSettings, prepare_base_model

    sys.path.insert(0, str(REPO / "benchmarks"))
    import _common as C

    models = workdir / "results/bench/models"
    if not (models / "base_float32").is_dir():
        prepare_base_model(BaseModelSettings(), models / "base_float32")
    model = AutoModelForCausalLM.from_pretrained(models / "base_float32")
    if not (models / "base_bfloat16").is_dir():
        model.to(torch.bfloat16).save_pretrained(models / "base_bfloat16")
        AutoTokenizer.from_pretrained(models / "base_float32").save_pretrained(models / "base_bfloat16")
        model.float()
    for seed, value in enumerate(LAMBDAS):
        folder = workdir / f"results/bench/seed_0/value_vectors/independent/{value}"
        if not folder.is_dir():
            C.save_value_vector(model, folder, seed=seed, r=16, alpha=32,
                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], b_std=0.01)


def measure(workdir: Path, arm: str, out: Path) -> dict:
    """Run one arm in this (fresh) process: the baseline after imports, the export, the peak."""
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401

    from mva_core import combine, export

    baseline = status_mb("VmRSS")
    folder, dtype, as_lora = ARMS[arm]
    run = workdir / "results/bench"
    vectors = {v: run / f"seed_0/value_vectors/independent/{v}" for v in LAMBDAS}
    plan = export.Export(run, "soup", 0, dict(LAMBDAS), vectors, run / "models" / folder, out, dtype, as_lora)
    if arm == "previous_deepcopy":  # the export before issue 25: fp32, merged into a deep copy
        model = transformers.AutoModelForCausalLM.from_pretrained(plan.policy, dtype=torch.float32)
        combine.merge_explicit(model, vectors, LAMBDAS).save_pretrained(out)
    else:
        export.write_export(plan)
    peak = status_mb("VmHWM")
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {"arm": arm, "baseline_mib": baseline, "peak_mib": peak, "exported_mib": size / 2**20,
            "ratio": (peak - baseline) / (size / 2**20)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the base and vectors are made (default: a temporary folder)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--limit", type=float, default=1.3, help="largest allowed ratio of the default arms")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--measure", nargs=2, metavar=("ARM", "OUT"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.workdir, args.measure[0], Path(args.measure[1]))))
        return 0
    with tempfile.TemporaryDirectory(prefix="export_memory_") as scratch:
        workdir = args.workdir or Path(scratch)
        prepare(workdir)
        results = []
        for arm in args.arms:
            out = Path(scratch) / f"out_{arm}"
            child = subprocess.run([sys.executable, __file__, "--workdir", str(workdir), "--measure", arm, str(out)],
                                   capture_output=True, text=True, check=True)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    import torch

    print(f"== mva-export memory on SmolLM2-135M ==\n  cpu: {cpu_name()}\n  torch: {torch.__version__}")
    for r in results:
        print(f"  {r['arm']}: baseline {r['baseline_mib']:.0f} MiB, peak {r['peak_mib']:.0f} MiB, "
              f"exported {r['exported_mib']:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for r in results:
        print(f"export_memory_lora_mib={r['peak_mib'] - r['baseline_mib']:.0f}" if r["arm"] == "lora"
              else f"export_memory_ratio_{r['arm']}={r['ratio']:.3f}")
    over = [r["arm"] for r in results if r["arm"] in DEFAULT_ARMS and r["ratio"] > args.limit]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
