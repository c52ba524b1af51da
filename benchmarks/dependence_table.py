"""Dependence-table benchmark: one module's record with every kernel built once vs rebuilt for every measure call.

A decorrelation table (``mva_core.decorrelation``) compares, per LoRA module, u with v, u with its self anchor and
20 random anchors with v, under nine measures, four of them on RBF kernels that share Gram matrices and bandwidths.
No model: random LoRA factors with SmolLM2-135M's attention shapes (q/o 576 × 576, k/v 192 × 576, r = 16,
alpha = 32), one module of each kind per repeat. Two ways, interleaved (rotating order) ``--repeats`` times:

- ``before``: the record as the table made it up to commit 1b36d28: every measure call through ``MEASURES`` on
  raw factors, so v's kernels are rebuilt for each of the 22 comparisons and each random vector's Gram matrix for
  each measure (the loop is copied below; ``MEASURES`` wraps fresh ``VectorKernels`` per call, so it caches
  nothing);
- ``new``: ``module_record`` (each vector's kernels built once, one random vector alive at a time).

Both must give the same record, bit for bit (the script exits 1 otherwise). Ratios are paired per repeat
(before ÷ new) and their median is reported on both clocks. Last line: ``dependence_table_speedup=<x>``.
"""
from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from mva_core.decorrelation import MEASURES, VectorKernels, measure_columns, module_record, rescaled_like  # noqa: E402
from mva_core.dependence import delta_w_norm, random_like  # noqa: E402

QUICK = dict(repeats=3)
MODULES = {"q_proj": 576, "k_proj": 192}  # d_out of SmolLM2-135M's attention projections (o like q, v like k)
D_IN, RANK, SCALING = 576, 16, 2.0


def parse_args(argv=None):
    parser = C.benchmark_parser(__doc__, QUICK)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--draws", type=int, default=20, help="random anchors per module (the tables use 20)")
    return C.parse_with_preset(parser, argv, QUICK)


def record_before(module: str, u, v, draws: int) -> dict:
    """The record as the table made it before: every measure on raw factors, all random anchors drawn first."""
    generator = torch.Generator().manual_seed(zlib.crc32(module.encode()))
    randoms = [random_like(u, generator) for _ in range(draws)]
    u_at_v_norms = rescaled_like(u, v)
    record: dict = {"module": module}
    with torch.no_grad():
        for name, measure in MEASURES.items():
            independent = [measure(random, v) for random in randoms]
            record.update(measure_columns(name, measure(u, v), measure(u, u_at_v_norms), independent,
                                          VectorKernels(u), VectorKernels(v)))  # saturation: its own kernels
    record.update(norm_a=delta_w_norm(u), norm_b=delta_w_norm(v))
    return record


def lora_factors(d_out: int, seed: int):
    """A trained-looking LoRA: kaiming-scale A rows, small non-zero B."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(RANK, D_IN, generator=generator) / math.sqrt(D_IN)
    B = 0.02 * torch.randn(d_out, RANK, generator=generator)
    return A, B, SCALING


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in ((a[k], b[k]) for k in a))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    C.print_header("dependence table: kernels built once vs per measure call",
                   {"modules": MODULES, "rank": RANK, "draws": args.draws, "repeats": args.repeats})
    ways = {"before": record_before, "new": module_record}
    times = {clock: {name: [] for name in ways} for clock in C.CLOCKS}
    for repeat in range(args.repeats):
        records: dict[str, list[dict]] = {name: [] for name in ways}
        order = list(ways)[repeat % 2:] + list(ways)[:repeat % 2]
        pairs = {module: (lora_factors(d_out, 2 * repeat), lora_factors(d_out, 2 * repeat + 1))
                 for module, d_out in MODULES.items()}
        for name in order:
            def run(way=ways[name], out=records[name]):
                out.extend(way(f"layers.{repeat}.{module}", u, v, args.draws) for module, (u, v) in pairs.items())
            wall, cpu = C.measure(run)
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
        if not all(same(a, b) for a, b in zip(records["before"], records["new"], strict=True)):
            print("new records differ from before", file=sys.stderr)
            return 1
    results = {clock: {"s_median": {n: round(C.median(ts), 3) for n, ts in t.items()},
                       "speedup": round(C.median([b / x for b, x in zip(t["before"], t["new"])]), 2)}
               for clock, t in times.items()}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"machine": C.machine(), "results": results}, indent=2))
    clock = C.pick_clock(args.clock, "cpu", args.threads)
    print(f"records identical: yes ({len(MODULES)} modules x {args.repeats} repeats)")
    print(f"dependence_table_speedup={results[clock]['speedup']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
