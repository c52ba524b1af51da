"""λ-grid evaluation benchmark: our batched path vs the authors' protocol, and the cost of per-row-λ LoRA.

Builds (in a temp dir, like the pipeline's artifacts) a random-weight Llama SFT model, k random LoRA value vectors
(non-zero B) and one tiny random reward model per value, then, on the same grid, prompts and token counts:

1. ``ours``: one model load, ``ValueMixer.attach``, one ``generate_grid`` over all (point, prompt) rows (per-row λ,
   batched), then per value one ``RewardScorer`` load and batched scoring. Run twice, before and after the
   reference, and averaged, so slow drifts of machine load hit both sides alike.
2. ``reference`` (benchmarks/reference_protocol.py): per grid point and per value, reload + merge, batch-1
   generation, reward-model reload, batch-1 scoring.

Greedy outputs of both paths must be identical (the script exits 1 otherwise) and rewards must agree to 1e-3.
Generation never stops early: the policy's EOS id is ``vocab_size``, an id it cannot produce, so every row on
every path generates exactly ``--new-tokens`` tokens.

3. a breakdown per generated row: prefill and decode cost, batched (ours) vs batch 1 (a merged model), which bounds
   the generation speedup (see ``breakdown``).
4. ``lora_overhead``: ``generate_grid`` on the bare base model (no mixer, all rows identical) vs through the mixer at
   per-row λ, same rows and batch size, interleaved ``--repeats`` times; plus, for comparison, the merged-weights
   alternative (per grid point: ``merge_explicit`` then plain batched generation of that point's prompts).

5. ``batching``: ``generate_grid`` through the mixer with fixed-row batches (``--batch-size``) vs token-capped
   batches (``max_batch_tokens``, one arm per ``--token-budgets`` entry), on ``--batching-prompts`` prompts with
   the same length range, interleaved ``--repeats`` times; outputs of all arms must be identical. Also prints each
   arm's batch plan: batches, prefill padding, the largest batch's padded tokens. Runs with ``--batching``
   (added to the rest) or ``--batching-only``.

``--analyze-run results/<run>`` needs no model: it replays a finished pipeline run's generation queue (its points,
prompts and generations) through each batching and reports the prefill padding and the decode row-steps spent on
rows that had already emitted EOS (generate stops a batch only when every row has).

Timings are taken on two clocks (wall, process CPU); ``--clock`` picks the one of the headline lines.

Last lines: ``speedup_vs_reference=<x>``, ``lora_overhead=<x>`` (plain tokens/s ÷ mixer tokens/s) and
``token_budget_speedup=<x>`` (fixed-row time ÷ the first token budget's time), each when its part ran.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from reference_protocol import MERGES, evaluate_reference  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mva_core.combine import ValueMixer, merge_explicit  # noqa: E402
from mva_core.generation import GenerationSettings, encode_prompts, generate_grid, plan_batches  # noqa: E402
from mva_core.reward_models import RewardModelSettings, RewardScorer, score_generations  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VALUE_NAMES = ["helpful", "harmless", "honest", "humorous", "concise", "creative", "formal", "safe"]
QUICK = dict(hidden=256, intermediate=768, layers=4, heads=4, kv_heads=2, vocab=4096, values=2, grid_size=4,
             prompts=8, new_tokens=48, batch_size=48, repeats=3)
SHARD_SIZE = 2048  # generate_grid's default: batches never span two shards


def parse_args(argv=None) -> argparse.Namespace:
    parser = C.benchmark_parser(__doc__, QUICK)
    C.add_shape_args(parser, 576, 1536, 30, 9, 3, 49152)  # defaults: SmolLM2-135M's shape
    C.add_shape_args(parser, 128, 256, 2, 4, 2, 0, prefix="rm-", what="reward model")
    parser.add_argument("--values", type=int, default=2, help="number of values (value vectors, reward models)")
    parser.add_argument("--grid-size", type=int, default=4,
                        help="λ levels per value, linspace(0, 1.5, n); the grid is their product (n^values points)")
    parser.add_argument("--prompts", type=int, default=12, help="evaluation prompts")
    parser.add_argument("--prompt-words", type=int, nargs=2, default=(6, 160),
                        help="prompt length range in words, log-spaced (HH eval prompts: median ~18, max ~260 words)")
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens generated per (point, prompt)")
    parser.add_argument("--batch-size", type=int, default=48, help="generation batch size (ours and plain)")
    parser.add_argument("--rm-batch-size", type=int, default=16, help="reward-model scoring batch size (ours)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--b-std", type=float, default=0.02, help="std of the random LoRA B entries")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the plain/mixer timing")
    parser.add_argument("--reference-merge", choices=MERGES, default="peft",
                        help="how the reference merges: PEFT (alpha×λ, merge_and_unload) or merge_explicit")
    parser.add_argument("--skip-reference", action="store_true", help="only the lora_overhead part")
    parser.add_argument("--skip-merged", action="store_true", help="skip the merged-weights comparison arm")
    parser.add_argument("--merged-repeats", type=int, default=1, help="repeats of the (slow) merged-weights arm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="policy dtype on both paths (bfloat16: merged and unmerged weights round differently, "
                             "so greedy outputs may legitimately differ and the identity check can fail)")
    parser.add_argument("--skip-breakdown", action="store_true", help="skip the prefill/decode cost breakdown")
    parser.add_argument("--token-budgets", nargs="+", default=["4096", "8192:96"], metavar="TOKENS[:ROWS]",
                        help="batching arms: max_batch_tokens ('none': fixed rows), optionally with their own row "
                             "cap (default --batch-size); the first one gives token_budget_speedup")
    parser.add_argument("--batching-prompts", type=int, default=24,
                        help="prompts of the batching comparison (default config: 2 values × 12), lengths as "
                             "--prompt-words")
    parser.add_argument("--batching", action="store_true",
                        help="add the fixed-row vs token-budget comparison (2-4 min with --quick) to the run")
    parser.add_argument("--batching-only", action="store_true", help="only the fixed-row vs token-budget comparison")
    parser.add_argument("--analyze-run", type=Path, metavar="RUN_DIR",
                        help="replay a finished run's generation queue (results/<run>) through the batchings of "
                             "--batch-size and --token-budgets, report padding and post-EOS decode waste, and exit")
    args = C.parse_with_preset(parser, argv, QUICK)
    if not 1 <= args.values <= len(VALUE_NAMES):
        parser.error(f"--values must be in 1..{len(VALUE_NAMES)}")
    return args


def build_artifacts(args: argparse.Namespace, root: Path) -> dict:
    tokenizer = C.build_tokenizer(args.vocab, seed=args.seed)
    shape, rm_shape = C.shape_from_args(args), C.shape_from_args(args, prefix="rm-")
    sft_dir = C.save_policy(shape, tokenizer, root / "models/sft", seed=args.seed, never_stop=True)
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    values = VALUE_NAMES[: args.values]
    targets = args.target_modules.split(",")
    adapters = {v: C.save_value_vector(model, root / f"value_vectors/mva/{v}", seed=args.seed + 1 + i, r=args.lora_r,
                                       alpha=args.lora_alpha, target_modules=targets, b_std=args.b_std)
                for i, v in enumerate(values)}
    reward_models = {v: C.save_reward_model(rm_shape, tokenizer, root / f"reward_models/{v}", seed=args.seed + 100 + i)
                     for i, v in enumerate(values)}
    prompts = C.make_prompts(args.prompts, *args.prompt_words, seed=args.seed, vocab=args.vocab)
    lambdas = np.linspace(0.0, 1.5, args.grid_size).round(6).tolist()
    points = C.product_grid(values, lambdas)
    return dict(sft_dir=sft_dir, adapters=adapters, reward_models=reward_models, prompts=prompts, points=points,
                values=values, shape=shape, rm_shape=rm_shape, lambdas=lambdas)


def rm_settings(args: argparse.Namespace) -> RewardModelSettings:
    return RewardModelSettings(source="local", input_format="chat_template", batch_size=args.rm_batch_size,
                               dtype="float32", max_length=512)


def gen_settings(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch_size)


def run_ours(args: argparse.Namespace, art: dict) -> tuple[pd.DataFrame, pd.DataFrame, C.Stopwatch]:
    """One load, one mixer, one generate_grid over every (point, prompt), batched scoring per value."""
    watch = C.Stopwatch()
    with watch("load_and_attach"):
        tokenizer = AutoTokenizer.from_pretrained(art["sft_dir"])
        model = AutoModelForCausalLM.from_pretrained(art["sft_dir"], dtype=DTYPES[args.dtype]).to(args.device)
        mixer = ValueMixer.attach(model, art["adapters"])
    with watch("generate"):
        generations = generate_grid(model, tokenizer, mixer, art["prompts"], art["points"], gen_settings(args),
                                    progress=False)
    del model, mixer
    scores = []
    for value in art["values"]:
        with watch("load_reward_model"):
            scorer = RewardScorer.load(art["reward_models"][value], rm_settings(args))
        with watch("score"):
            scores.append(score_generations(scorer, generations, art["prompts"], value))
        del scorer
    return generations, pd.concat(scores, ignore_index=True), watch


def compare_outputs(ours: pd.DataFrame, ours_scores: pd.DataFrame, ref: pd.DataFrame,
                    ref_scores: pd.DataFrame) -> list[str]:
    """Problems found (empty list: identical greedy outputs and matching rewards)."""
    problems = []
    keys = ["point_id", "prompt_id"]
    mine = ours.set_index(keys)[["response", "n_response_tokens"]]
    for value, frame in ref.groupby("value"):
        theirs = frame.set_index(keys)[["response", "n_response_tokens"]].reindex(mine.index)
        differ = (theirs["response"] != mine["response"]) | (theirs["n_response_tokens"] != mine["n_response_tokens"])
        if differ.any():
            example = differ[differ].index[0]
            problems.append(f"{int(differ.sum())}/{len(differ)} greedy outputs differ from the reference "
                            f"(value {value}), e.g. {example}: ours {mine.loc[example, 'response']!r} vs "
                            f"reference {theirs.loc[example, 'response']!r}")
    merged = ours_scores.merge(ref_scores, on=["point_id", "prompt_id", "value"], suffixes=("_ours", "_ref"))
    if len(merged) != len(ref_scores) or len(merged) != len(ours_scores):
        problems.append(f"score rows do not line up: ours {len(ours_scores)}, reference {len(ref_scores)}")
    diff = float((merged["reward_ours"] - merged["reward_ref"]).abs().max())
    if not diff <= 1e-3:
        problems.append(f"rewards differ from the reference by up to {diff:.3g} (> 1e-3)")
    return problems


def plain_vs_mixer(args: argparse.Namespace, art: dict) -> dict:
    """Interleaved timings of generate_grid: bare model (no mixer) vs mixer at per-row λ (vs merged per point)."""
    tokenizer = AutoTokenizer.from_pretrained(art["sft_dir"])
    bare = AutoModelForCausalLM.from_pretrained(art["sft_dir"], dtype=DTYPES[args.dtype]).to(args.device).eval()
    mixed = copy.deepcopy(bare)
    mixer = ValueMixer.attach(mixed, art["adapters"])
    points, prompts, settings = art["points"], art["prompts"], gen_settings(args)
    plain_points = points[["point_id"]]
    rows = len(points) * len(prompts)
    tokens = rows * args.new_tokens
    lam_columns = [f"lam_{v}" for v in art["values"]]

    def plain() -> None:
        generate_grid(bare, tokenizer, None, prompts, plain_points, settings, progress=False)

    def ours() -> None:
        generate_grid(mixed, tokenizer, mixer, prompts, points, settings, progress=False)

    def merged() -> None:
        for point in points.itertuples(index=False):
            lams = {v: float(getattr(point, c)) for v, c in zip(art["values"], lam_columns)}
            model = merge_explicit(bare, art["adapters"], lams)
            generate_grid(model, tokenizer, None, prompts, pd.DataFrame({"point_id": [point.point_id]}), settings,
                          progress=False)

    arms = {"plain": plain, "mixer": ours}
    if not args.skip_merged:
        arms["merged_per_point"] = merged
    ours()  # warm-up (allocator, kernels) outside the timings
    plain()
    times = {clock: {name: [] for name in arms} for clock in C.CLOCKS}
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
        for name in order:
            if name == "merged_per_point" and repeat >= args.merged_repeats:
                continue
            wall, cpu = C.measure(arms[name])
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
    result = {"rows": rows, "tokens": tokens, "batch_size": args.batch_size}
    for clock in C.CLOCKS:
        t = times[clock]
        result[clock] = {
            "seconds": {name: [round(x, 3) for x in ts] for name, ts in t.items()},
            "tokens_per_s": {name: round(tokens / C.median(ts), 1) for name, ts in t.items()},
            # median of paired ratios: each mixer run against the plain run next to it
            "lora_overhead": round(C.median([m / p for m, p in zip(t["mixer"], t["plain"])]), 3),
        }
        if t.get("merged_per_point"):
            result[clock]["merged_per_point_vs_plain"] = round(C.median(t["merged_per_point"]) / C.median(t["plain"]), 3)
    return result


def breakdown(args: argparse.Namespace, art: dict) -> dict:
    """Per generated row, one value's worth: prefill and decode cost, batched (ours) vs batch 1 (the reference).

    Batched: ``generate_grid`` with 1 new token (≈ prefill) and with ``--new-tokens``. Batch 1: every prompt of one
    grid point generated alone by that point's merged model (the reference's arithmetic, without its loads), scaled
    to all points. Decode = full − prefill. On CPU prefill is compute-bound at any batch size, so batching only
    speeds up decoding; the generation speedup is bounded by values × (prefill₁ + decode₁) / (prefill_B + decode_B).
    """
    from reference_protocol import generate_one

    from mva_core.generation import encode_prompts

    tokenizer = AutoTokenizer.from_pretrained(art["sft_dir"])
    model = AutoModelForCausalLM.from_pretrained(art["sft_dir"], dtype=DTYPES[args.dtype]).to(args.device).eval()
    mixer = ValueMixer.attach(model, art["adapters"])
    points, prompts = art["points"], art["prompts"]
    rows = len(points) * len(prompts)
    encoded = encode_prompts(tokenizer, prompts)
    eos = [model.generation_config.eos_token_id]
    point = points.iloc[len(points) // 2]
    merged = merge_explicit(AutoModelForCausalLM.from_pretrained(art["sft_dir"], dtype=DTYPES[args.dtype]),
                            art["adapters"], {v: float(point[f"lam_{v}"]) for v in art["values"]})
    merged = merged.to(args.device).eval()

    def batched(new_tokens: int) -> None:
        generate_grid(model, tokenizer, mixer, prompts, points,
                      GenerationSettings(max_new_tokens=new_tokens, batch_size=args.batch_size), progress=False)

    def batch_one(new_tokens: int) -> None:
        for ids in encoded:
            generate_one(merged, ids, new_tokens, eos, tokenizer.pad_token_id)

    batched(2)  # warm-up
    out: dict = {clock: {} for clock in C.CLOCKS}
    for name, fn, scale in (("batched", batched, 1), ("batch1", batch_one, len(points))):
        prefill = C.measure(fn, 1)
        full = C.measure(fn, args.new_tokens)
        for i, clock in enumerate(C.CLOCKS):
            pre, tot = prefill[i] * scale / rows * 1e3, full[i] * scale / rows * 1e3
            out[clock][name] = {"prefill_ms_per_row": round(pre, 2), "decode_ms_per_row": round(tot - pre, 2),
                                "total_ms_per_row": round(tot, 2)}
    for clock in C.CLOCKS:
        b, one = out[clock]["batched"], out[clock]["batch1"]
        out[clock]["decode_batching_gain"] = round(one["decode_ms_per_row"] / b["decode_ms_per_row"], 2)
        out[clock]["prefill_share_batched"] = round(b["prefill_ms_per_row"] / b["total_ms_per_row"], 3)
        out[clock]["generation_speedup_estimate"] = round(
            len(art["values"]) * one["total_ms_per_row"] / b["total_ms_per_row"], 2)
        out[clock]["generation_speedup_bound_free_decode"] = round(
            len(art["values"]) * one["total_ms_per_row"] / b["prefill_ms_per_row"], 2)
    return out


def budget_arms(args: argparse.Namespace, new_tokens: int, batch_size: int) -> dict[str, GenerationSettings]:
    """Fixed rows first, then one token-capped arm per ``--token-budgets`` entry."""
    arms = {f"rows≤{batch_size}": GenerationSettings(max_new_tokens=new_tokens, batch_size=batch_size)}
    for spec in args.token_budgets:
        tokens, _, rows = spec.partition(":")
        settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=int(rows or batch_size),
                                      max_batch_tokens=None if tokens == "none" else int(tokens))
        arms[f"tokens≤{settings.max_batch_tokens},rows≤{settings.batch_size}"] = settings
    return arms


def batch_plan(queue_lengths: list[int], settings: GenerationSettings) -> list[list[int]]:
    """Prompt lengths of every batch of ``generate_grid`` for this queue (longest first), shard by shard."""
    batches = []
    for start in range(0, len(queue_lengths), SHARD_SIZE):
        shard = queue_lengths[start: start + SHARD_SIZE]
        for size in plan_batches(shard, settings):
            batches.append(shard[:size])
            shard = shard[size:]
    return batches


def plan_stats(batches: list[list[int]], new_tokens: int) -> dict:
    padded = sum(len(b) * max(b) for b in batches)
    real = sum(sum(b) for b in batches)
    return {"batches": len(batches), "rows_per_batch": round(sum(map(len, batches)) / len(batches), 1),
            "prefill_tokens": real, "prefill_padded": padded, "prefill_padding_share": round(1 - real / padded, 3),
            "max_batch_tokens": max(len(b) * (max(b) + new_tokens) for b in batches)}


def batching(args: argparse.Namespace, art: dict) -> dict:
    """Fixed-row vs token-capped batches: interleaved ``generate_grid`` timings through the mixer, same rows."""
    tokenizer = AutoTokenizer.from_pretrained(art["sft_dir"])
    model = AutoModelForCausalLM.from_pretrained(art["sft_dir"], dtype=DTYPES[args.dtype]).to(args.device).eval()
    mixer = ValueMixer.attach(model, art["adapters"])
    points = art["points"]
    prompts = C.make_prompts(args.batching_prompts, *args.prompt_words, seed=args.seed + 1, vocab=args.vocab)
    lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
    queue = sorted(lengths * len(points), reverse=True)
    arms = budget_arms(args, args.new_tokens, args.batch_size)
    result: dict = {"rows": len(queue), "prompt_tokens": f"{min(lengths)}-{max(lengths)} (median "
                    f"{sorted(lengths)[len(lengths) // 2]})",
                    "plans": {name: plan_stats(batch_plan(queue, s), args.new_tokens) for name, s in arms.items()}}

    def run(settings: GenerationSettings) -> pd.DataFrame:
        return generate_grid(model, tokenizer, mixer, prompts, points, settings, progress=False)

    outputs = {name: run(s) for name, s in arms.items()}  # warm-up, and the outputs to compare
    first = next(iter(outputs.values()))
    result["outputs_identical"] = all(out.equals(first) for out in outputs.values())
    times = {clock: {name: [] for name in arms} for clock in C.CLOCKS}
    for repeat in range(args.repeats):
        for name in list(arms) if repeat % 2 == 0 else list(reversed(arms)):
            wall, cpu = C.measure(run, arms[name])
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
    fixed = next(iter(arms))
    for clock in C.CLOCKS:
        t = times[clock]
        result[clock] = {
            "seconds": {name: [round(x, 3) for x in ts] for name, ts in t.items()},
            "median_seconds": {name: round(C.median(ts), 3) for name, ts in t.items()},
            # median of paired ratios: each arm's run against the fixed-row run of the same repeat
            "speedup_vs_fixed": {name: round(C.median([f / x for f, x in zip(t[fixed], ts)]), 3)
                                 for name, ts in t.items() if name != fixed},
        }
    return result


def analyze_run(args: argparse.Namespace) -> dict:
    """Batch plans of a finished run's generation queue, with the run's real response lengths (no model needed)."""
    run = args.analyze_run
    prompt_order = pd.read_parquet(run / "evaluation/prompts.parquet")["prompt_id"].tolist()
    out: dict = {}
    for path in sorted(run.glob("seed_*/evaluation/*/generations.parquet")):
        method = path.parent.name
        gens = pd.read_parquet(path).set_index(["point_id", "prompt_id"])
        point_order = pd.read_parquet(run / f"evaluation/{method}/points.parquet")["point_id"].tolist()
        new_tokens = int(gens["n_response_tokens"].max())
        # generate_grid's queue: (point, prompt) pairs in input order, stably sorted by prompt length, longest first
        pairs = sorted(((pt, pr) for pt in point_order for pr in prompt_order),
                       key=lambda key: -int(gens.at[key, "n_prompt_tokens"]))
        prompt_len = [int(gens.at[key, "n_prompt_tokens"]) for key in pairs]
        # decode steps a row needs: its tokens, plus the EOS step when it finished; generate runs a batch until
        # its longest row is done, every row of it for every step
        steps = [min(new_tokens, int(gens.at[key, "n_response_tokens"]) + bool(gens.at[key, "finished"]))
                 for key in pairs]
        entry = {"rows": len(pairs), "new_tokens": new_tokens, "finished_share": round(float(gens["finished"].mean()), 3)}
        for name, settings in budget_arms(args, new_tokens, args.batch_size).items():
            batches, start, row_steps = batch_plan(prompt_len, settings), 0, 0
            for batch in batches:
                row_steps += len(batch) * max(steps[start: start + len(batch)])
                start += len(batch)
            entry[name] = {**plan_stats(batches, new_tokens), "decode_row_steps": row_steps,
                           "decode_after_eos_share": round(1 - sum(steps) / row_steps, 3)}
        out[f"{path.parent.parent.parent.name}/{method}"] = entry
    return out


def describe_tokens(art: dict) -> str:
    tokenizer = AutoTokenizer.from_pretrained(art["sft_dir"])
    from mva_core.generation import encode_prompts

    lengths = sorted(len(ids) for ids in encode_prompts(tokenizer, art["prompts"]))
    return f"{lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]})"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.analyze_run:
        analysis = analyze_run(args)
        for run, entry in analysis.items():
            print(f"{run}: {json.dumps(entry, ensure_ascii=False)}")
        if args.json:
            args.json.write_text(json.dumps(analysis, indent=2))
        return 0
    torch.set_num_threads(args.threads)
    clock = C.pick_clock(args.clock, args.device, args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mva_grid_eval_") as tmp:
        art = build_artifacts(args, Path(tmp))
        n_points, n_prompts = len(art["points"]), len(art["prompts"])
        C.print_header("λ-grid evaluation benchmark", {
            "policy": art["shape"].describe(),
            "reward_model": art["rm_shape"].describe(),
            "values": art["values"],
            "lora": f"r={args.lora_r}, alpha={args.lora_alpha}, modules={args.target_modules}",
            "grid": f"{args.grid_size}^{args.values} = {n_points} points, λ ∈ {art['lambdas']}",
            "prompts": f"{n_prompts}, {describe_tokens(art)} with the chat template",
            "new_tokens": args.new_tokens,
            "batch_size": f"generation {args.batch_size}, reward model {args.rm_batch_size} (reference: 1 and 1)",
            "device": args.device,
            "headline_clock": clock,
        })
        results: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                         "machine": C.machine(), "policy": art["shape"].describe(),
                         "reward_model": art["rm_shape"].describe(), "grid_points": n_points, "prompts": n_prompts,
                         "prompt_tokens": describe_tokens(art), "headline_clock": clock}
        status = 0
        if not args.skip_reference and not args.batching_only:
            run_ours(args, art)  # warm-up (lazy imports, allocator), untimed
            gen_a, scores_a, watch_a = run_ours(args, art)
            print(f"ours (run 1): {watch_a.total('wall'):.2f}s wall, {watch_a.total('cpu'):.2f}s cpu "
                  f"{json.dumps(watch_a.phases(clock))}", flush=True)
            watch_ref = C.Stopwatch()
            ref_gen, ref_scores = evaluate_reference(
                art["sft_dir"], art["adapters"], art["reward_models"], rm_settings(args), art["prompts"],
                art["points"], args.new_tokens, merge=args.reference_merge, device=args.device, timer=watch_ref,
                dtype=DTYPES[args.dtype])
            print(f"reference: {watch_ref.total('wall'):.2f}s wall, {watch_ref.total('cpu'):.2f}s cpu "
                  f"{json.dumps(watch_ref.phases(clock))}", flush=True)
            gen_b, scores_b, watch_b = run_ours(args, art)
            print(f"ours (run 2): {watch_b.total('wall'):.2f}s wall, {watch_b.total('cpu'):.2f}s cpu "
                  f"{json.dumps(watch_b.phases(clock))}", flush=True)
            problems = compare_outputs(gen_a, scores_a, ref_gen, ref_scores)
            if not gen_a.equals(gen_b):
                problems.append("our two runs produced different generations")
            tokens_ok = bool((gen_a["n_response_tokens"] == args.new_tokens).all()
                             and (ref_gen["n_response_tokens"] == args.new_tokens).all())
            if not tokens_ok:
                problems.append("some rows generated fewer than --new-tokens tokens")
            for problem in problems:
                print(f"MISMATCH: {problem}")
            status = 1 if problems else 0
            distinct = int(gen_a.groupby("point_id")["response"].apply(tuple).nunique())
            reward_diff = float(scores_a.merge(ref_scores, on=["point_id", "prompt_id", "value"])
                                 .eval("reward_x - reward_y").abs().max())
            grid = {"outputs_identical": not problems, "distinct_point_outputs": distinct,
                    "max_reward_abs_diff": reward_diff}
            for c in C.CLOCKS:
                ours_total = (watch_a.total(c) + watch_b.total(c)) / 2
                ours_generate = (getattr(watch_a, c)["generate"] + getattr(watch_b, c)["generate"]) / 2
                grid[c] = {
                    "ours_seconds": [round(watch_a.total(c), 3), round(watch_b.total(c), 3)],
                    "ours_phases": [watch_a.phases(c), watch_b.phases(c)],
                    "reference_seconds": round(watch_ref.total(c), 3),
                    "reference_phases": watch_ref.phases(c),
                    "speedup_vs_reference": round(watch_ref.total(c) / ours_total, 2),
                    "generation_only_speedup": round(getattr(watch_ref, c)["generate"] / ours_generate, 2),
                }
                print(f"[{c}] speedup {grid[c]['speedup_vs_reference']}× (generation only "
                      f"{grid[c]['generation_only_speedup']}×)")
            results["grid_eval"] = grid
            print(f"outputs identical to the reference: {not problems} ({distinct}/{n_points} grid points give "
                  f"distinct outputs; every row {args.new_tokens} new tokens: {tokens_ok}; max |reward diff| "
                  f"{reward_diff:.2g})", flush=True)
        if not args.skip_breakdown and not args.batching_only:
            results["breakdown"] = parts = breakdown(args, art)
            for c in C.CLOCKS:
                print(f"[{c}] per row and value: batch 1 {json.dumps(parts[c]['batch1'])}; batched "
                      f"{json.dumps(parts[c]['batched'])}; decode batching gain {parts[c]['decode_batching_gain']}×, "
                      f"prefill share of batched generation {parts[c]['prefill_share_batched']}, generation speedup "
                      f"≈ {parts[c]['generation_speedup_estimate']}× (with free decoding at most "
                      f"{parts[c]['generation_speedup_bound_free_decode']}×)", flush=True)
        if not args.batching_only:
            overhead = plain_vs_mixer(args, art)
            results["lora"] = overhead
            print(f"plain vs mixer (batch {args.batch_size}, {overhead['rows']} rows × {args.new_tokens} tokens, "
                  f"{args.repeats} interleaved repeats):")
            for c in C.CLOCKS:
                o = overhead[c]
                print(f"  [{c}] seconds {json.dumps(o['seconds'])}; tokens/s (medians) {json.dumps(o['tokens_per_s'])}; "
                      f"lora_overhead {o['lora_overhead']}"
                      + (f"; merged_per_point ÷ plain {o['merged_per_point_vs_plain']}"
                         if "merged_per_point_vs_plain" in o else ""))
        if args.batching or args.batching_only:
            results["batching"] = b = batching(args, art)
            print(f"fixed rows vs token budget ({b['rows']} rows, prompts {b['prompt_tokens']} tokens, "
                  f"{args.new_tokens} new tokens, {args.repeats} interleaved repeats; outputs identical: "
                  f"{b['outputs_identical']}):")
            for name, plan in b["plans"].items():
                print(f"  plan {name}: {json.dumps(plan)}")
            for c in C.CLOCKS:
                print(f"  [{c}] seconds {json.dumps(b[c]['seconds'], ensure_ascii=False)}; speedup vs fixed rows (median of paired "
                      f"ratios) {json.dumps(b[c]['speedup_vs_fixed'], ensure_ascii=False)}", flush=True)
            if not b["outputs_identical"]:
                print("MISMATCH: token-budget batching changed greedy outputs")
                status = 1
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["loadavg_1m_end"] = C.machine()["loadavg_1m"]
    print(f"wall time: {results['wall_seconds']}s, load average at end: {results['loadavg_1m_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if "grid_eval" in results:
        print(f"speedup_vs_reference={results['grid_eval'][clock]['speedup_vs_reference']}")
    if "lora" in results:
        print(f"lora_overhead={results['lora'][clock]['lora_overhead']}")
    if "batching" in results:
        print(f"token_budget_speedup={next(iter(results['batching'][clock]['speedup_vs_fixed'].values()))}")
    return status


if __name__ == "__main__":
    sys.exit(main())
