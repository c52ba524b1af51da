"""Decorrelation-penalty benchmark: the per-module loop it replaced vs ``mva_core.penalties.DecorrelationPenalty``.

No model: random LoRA factors of a model's attention projections (q/k/v/o per layer) for the trained value vector
and ``--frozen`` earlier ones, paired as ``collect_lora_pairs`` pairs them (``delta_w`` rows sampled by
``sample_rows``). Trained B is random and non-zero (a mid-training adapter; at B = 0 every ΔW row is 0). Two
shapes per run:

- ``smollm2``: SmolLM2-135M's attention (hidden 576, 9/3 heads of 64: q/o 576 × 576, k/v 192 × 576), 30 layers,
  r = 16, alpha = 32: 120 modules, the pipeline's default;
- ``7b``: a Llama-7B-like attention (hidden 4096, 32/32 heads: all 4096 × 4096), ``--layers-7b`` layers, r = 64,
  alpha = 128.

Per shape and HSIC form (``lora_a`` with sigma 1.0, the released code's; ``delta_w`` with sigma "median",
``max_rows`` 256, as config/compare.yaml), one forward + backward of:

- ``before``: the pre-change ``decorrelation_penalty`` (commit 9e3ff88), copied below with its kernels: a Python
  loop over pairs, the frozen kernel recomputed every call, two full medians per pair for sigma "median";
- ``new``: ``DecorrelationPenalty`` (frozen side cached, modules batched, trained bandwidth from
  ``MEDIAN_PAIRS`` sampled distances);
- ``new_exact`` (``delta_w`` only): the same with the exact median (``median_pairs=None``), isolating the caching
  and batching from the subsampled median.

The three run interleaved (rotating order) ``--repeats`` times, ``--calls`` calls each; ratios are paired per
repeat (before ÷ new) and their median is reported, on both clocks (wall, process CPU). Values and gradients of
``new_exact`` must match ``before`` (the script exits 1 otherwise). Last lines: ``penalty_speedup_<shape>_<form>=<x>``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from mva_core.penalties import MEDIAN_PAIRS, DecorrelationPenalty, LoraPair, PenaltySettings, sample_rows  # noqa: E402

QUICK = dict(repeats=5, calls=2)
SHAPES = {  # name: (hidden, q/o d_out, k/v d_out, default layers, r, alpha)
    "smollm2": (576, 576, 192, 30, 16, 32),
    "7b": (4096, 4096, 4096, 4, 64, 128),
}
PENALTIES = {
    "lora_a": PenaltySettings(kind="hsic", weight=1.0, form="lora_a", sigma=1.0),
    "delta_w": PenaltySettings(kind="hsic", weight=1.0, form="delta_w", sigma="median", max_rows=256),
}  # orthogonality is not benchmarked: DecorrelationPenalty computes it with the same per-pair loop as before


def parse_args(argv=None) -> argparse.Namespace:
    parser = C.benchmark_parser(__doc__, QUICK)
    parser.add_argument("--shapes", default="smollm2,7b", help=f"comma-separated, of {list(SHAPES)}")
    parser.add_argument("--layers-smollm2", type=int, default=SHAPES["smollm2"][3])
    parser.add_argument("--layers-7b", type=int, default=SHAPES["7b"][3], help="'a few modules': 4 per layer")
    parser.add_argument("--frozen", type=int, default=1, help="earlier (frozen) value vectors")
    parser.add_argument("--penalties", default=",".join(PENALTIES), help=f"comma-separated, of {list(PENALTIES)}")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats (ratios: median over these)")
    parser.add_argument("--calls", type=int, default=3, help="forward+backward calls per timing")
    return C.parse_with_preset(parser, argv, QUICK)


# --- before: mva_core.penalties.decorrelation_penalty and mva_core.hsic as of commit 9e3ff88 (verbatim maths) ---

def _before_rbf(gram: torch.Tensor, sigma) -> torch.Tensor:
    gram = gram.float()
    diag = gram.diagonal()
    dist = (diag[:, None] + diag[None, :] - 2 * gram).clamp_min(0)
    if sigma == "median":
        n = dist.shape[0]
        off_diagonal = dist.detach()[~torch.eye(n, dtype=torch.bool, device=dist.device)]
        two_sigma_sq = off_diagonal.median().clamp_min(1e-12) if n > 1 else dist.new_tensor(1.0)
    else:
        two_sigma_sq = 2.0 * float(sigma) ** 2
    return torch.exp(-dist / two_sigma_sq)


def _before_hsic(K: torch.Tensor, L: torch.Tensor, normalization: str) -> torch.Tensor:
    n = K.shape[0]
    K, L = K.float(), L.float()
    centred = K - K.mean(dim=0, keepdim=True) - K.mean(dim=1, keepdim=True) + K.mean()
    return (centred * L).sum() / (n**2 if normalization == "n2" else (n - 1) ** 2)


def _before_gram(A: torch.Tensor, B: torch.Tensor, scaling: float, rows) -> torch.Tensor:
    A, B = A.float(), B.float()
    if rows is not None:
        B = B.index_select(0, rows.to(B.device))
    return (scaling**2) * (B @ (A @ A.T) @ B.T)


def before_penalty(pairs: list[LoraPair], settings: PenaltySettings) -> torch.Tensor:
    terms = []
    for pair in pairs:
        frozen_A, frozen_B = pair.frozen_A.detach(), pair.frozen_B.detach()
        if settings.form == "lora_a":
            A_u, A_v = pair.A.float(), frozen_A.float()
            K, L = _before_rbf(A_u @ A_u.T, settings.sigma), _before_rbf(A_v @ A_v.T, settings.sigma)
            terms.append(_before_hsic(K, L, settings.normalization))
        else:
            K = _before_rbf(_before_gram(pair.A, pair.B, pair.scaling, pair.rows), settings.sigma)
            L = _before_rbf(_before_gram(frozen_A, frozen_B, pair.frozen_scaling, pair.rows), settings.sigma)
            terms.append(_before_hsic(K, L, settings.normalization))
    return torch.stack(terms).sum()


# --- random value vectors ---

def make_pairs(shape: str, layers: int, frozen: int, max_rows: int, seed: int) -> list[LoraPair]:
    """LoraPairs of ``layers`` × q/k/v/o with ``frozen`` earlier values; PEFT-like A, random non-zero B."""
    hidden, qo_out, kv_out, _, r, alpha = SHAPES[shape]
    generator = torch.Generator().manual_seed(seed)

    def factors(d_out: int, trainable: bool) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        bound = 1 / hidden**0.5  # kaiming_uniform(a=sqrt(5)) of an r × hidden A, as PEFT initialises it
        A = (torch.rand(r, hidden, generator=generator) * 2 - 1) * bound
        B = torch.randn(d_out, r, generator=generator) * 0.02
        return torch.nn.Parameter(A, requires_grad=trainable), torch.nn.Parameter(B, requires_grad=trainable)

    pairs = []
    for layer in range(layers):
        for proj, d_out in (("q_proj", qo_out), ("k_proj", kv_out), ("v_proj", kv_out), ("o_proj", qo_out)):
            label = f"model.layers.{layer}.self_attn.{proj}"
            A, B = factors(d_out, True)
            rows = sample_rows(label, d_out, max_rows)
            for value in range(frozen):
                frozen_A, frozen_B = factors(d_out, False)
                pairs.append(LoraPair(label, f"value{value}", A, B, alpha / r, frozen_A, frozen_B, alpha / r, rows))
    return pairs


def trained_params(pairs: list[LoraPair]) -> list[torch.nn.Parameter]:
    return list({id(p): p for pair in pairs for p in (pair.A, pair.B)}.values())


def value_and_grads(fn, params) -> tuple[float, list[torch.Tensor]]:
    for p in params:
        p.grad = None
    value = fn()
    value.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return float(value.detach()), grads


def compare(shape: str, form: str, pairs: list[LoraPair], args) -> dict:
    settings = PENALTIES[form]
    params = trained_params(pairs)
    variants = {"before": lambda: before_penalty(pairs, settings)}
    new = DecorrelationPenalty(pairs, settings)
    variants["new"] = new
    if form == "delta_w":
        variants["new_exact"] = DecorrelationPenalty(pairs, settings, median_pairs=None)
    started = time.perf_counter()
    for fn in variants.values():  # warm-up; builds the frozen caches (timed separately below)
        fn()
    build = {}
    for name in variants:
        if name != "before":
            fresh = DecorrelationPenalty(pairs, settings, median_pairs=None if name == "new_exact" else MEDIAN_PAIRS)
            build[name] = C.measure(fresh)  # first call: frozen side + one trained side
    checks = {}
    reference_value, reference_grads = value_and_grads(variants["before"], params)
    for name, fn in variants.items():
        if name == "before":
            continue
        value, grads = value_and_grads(fn, params)
        grad_error = max(float((g - r).norm() / r.norm().clamp_min(1e-30)) for g, r in zip(grads, reference_grads))
        checks[name] = {"value": value, "value_rel_diff": abs(value - reference_value) / abs(reference_value),
                        "max_grad_rel_diff": grad_error}

    def run(fn) -> None:
        for _ in range(args.calls):
            fn().backward()
        for p in params:
            p.grad = None

    times = {clock: {name: [] for name in variants} for clock in C.CLOCKS}
    names = list(variants)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            wall, cpu = C.measure(run, variants[name])
            times["wall"][name].append(wall / args.calls)
            times["cpu"][name].append(cpu / args.calls)
    result = {"shape": shape, "form": form, "settings": str(settings), "pairs": len(pairs),
              "reference_value": reference_value, "checks": checks,
              "setup_seconds": round(time.perf_counter() - started, 2),
              "first_call_seconds": {name: {"wall": round(w, 5), "cpu": round(c, 5)} for name, (w, c) in build.items()}}
    for clock in C.CLOCKS:
        t = times[clock]
        result[clock] = {
            "ms_median": {name: round(1e3 * C.median(ts), 3) for name, ts in t.items()},
            "speedup": {name: round(C.median([b / x for b, x in zip(t["before"], ts)]), 2)
                        for name, ts in t.items() if name != "before"},
            "ms": {name: [round(1e3 * x, 3) for x in ts] for name, ts in t.items()},
        }
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    clock = C.pick_clock(args.clock, "cpu", args.threads)
    shapes, forms = args.shapes.split(","), args.penalties.split(",")
    layers = {"smollm2": args.layers_smollm2, "7b": args.layers_7b}
    C.print_header("Decorrelation penalty benchmark", {
        "shapes": {s: f"hidden {SHAPES[s][0]}, q/o d_out {SHAPES[s][1]}, k/v d_out {SHAPES[s][2]}, {layers[s]} layers "
                      f"x 4 projections, r={SHAPES[s][4]}, alpha={SHAPES[s][5]}" for s in shapes},
        "frozen_values": args.frozen,
        "penalties": {f: str(PENALTIES[f]) for f in forms},
        "median_pairs": MEDIAN_PAIRS,
        "repeats x calls": f"{args.repeats} x {args.calls}",
        "headline_clock": clock,
    })
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "machine": C.machine(), "headline_clock": clock, "runs": []}
    ok = True
    for shape in shapes:
        pairs = make_pairs(shape, layers[shape], args.frozen, 256, args.seed)
        for form in forms:
            r = compare(shape, form, pairs, args)
            results["runs"].append(r)
            for name, check in r["checks"].items():
                # the subsampled median moves the bandwidth slightly: only new_exact must equal "before"
                tolerance = (1e-2, 5e-2) if name == "new" and form == "delta_w" else (1e-4, 1e-3)
                good = check["value_rel_diff"] <= tolerance[0] and check["max_grad_rel_diff"] <= tolerance[1]
                ok &= good
                check["ok"] = good
            times = "; ".join(
                f"[{c}] " + ", ".join(f"{n} {ms:.2f} ms" for n, ms in r[c]["ms_median"].items())
                + " -> " + ", ".join(f"before/{n} {x}x" for n, x in r[c]["speedup"].items())
                for c in (clock, *[c for c in C.CLOCKS if c != clock]))
            diffs = ", ".join(f"{n}: value {c['value_rel_diff']:.1e}, grad {c['max_grad_rel_diff']:.1e}"
                              f"{'' if c['ok'] else ' MISMATCH'}" for n, c in r["checks"].items())
            first = ", ".join(f"{n} {1e3 * t[clock]:.1f} ms" for n, t in r["first_call_seconds"].items())
            print(f"{shape} {form} ({r['pairs']} pairs): {times}\n    rel. diff vs before: {diffs}; "
                  f"first call (builds the frozen cache): {first}", flush=True)
    results["loadavg_1m_end"] = C.machine()["loadavg_1m"]
    print(f"load average at end: {results['loadavg_1m_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    for r in results["runs"]:
        print(f"penalty_speedup_{r['shape']}_{r['form']}={r[clock]['speedup']['new']}")
    if not ok:
        print("MISMATCH: a new penalty differs from the before implementation", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
