"""DPO training benchmark: cost of the decorrelation penalty per step, and of reference log-probs per epoch.

On a random-weight Llama saved like the pipeline's SFT model, with one frozen earlier value vector (non-zero B):

1. ``hsic_overhead``: one ``DecorrelatedDPOTrainer`` (built as ``train_value_vector`` builds it, reference
   log-probs precomputed, i.e. the cheapest step, so the penalty's share is the largest) trains for
   3 × ``--steps`` steps; a callback rotates the penalty per step (off, HSIC ``lora_a``, HSIC ``delta_w``) and times
   each optimizer step (forward + backward + update). Per form: (median t_on − median t_off) / median t_on. As a
   cross-check the penalty alone (forward + backward of the trainer's ``DecorrelationPenalty``) is timed in
   isolation. ``benchmarks/penalty.py`` compares the penalty with the implementation it replaced.
2. ``ref_precompute_speedup``: full ``train_value_vector`` runs (load, train ``--epochs`` epochs, save) with
   ``precompute_ref_log_probs`` True vs False, interleaved ``--repeats`` times, median wall times (False ÷ True).

Data are synthetic preference pairs of near-constant length (so steps do the same work). Last two lines:
``hsic_overhead=<x>`` (lora_a form, the released code's) and ``ref_precompute_speedup=<x>``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

from mva_core.dpo_trainer import TRAINED_ADAPTER, DecorrelatedDPOTrainer, PreferenceCollator, preference_dataset  # noqa: E402
from mva_core.penalties import DecorrelationPenalty, PenaltySettings, collect_lora_pairs  # noqa: E402
from mva_core.training.harness import quiet_progress_bars  # noqa: E402
from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector  # noqa: E402

QUICK = dict(hidden=256, intermediate=768, layers=4, heads=4, kv_heads=2, vocab=4096, pairs=16, steps=24,
             repeats=3)
MODES = ("off", "lora_a", "delta_w", "off_ref_every_step")  # the last: no penalty, reference forward every step


def parse_args(argv=None) -> argparse.Namespace:
    parser = C.benchmark_parser(__doc__, QUICK)
    C.add_shape_args(parser, 576, 1536, 30, 9, 3, 49152)  # defaults: SmolLM2-135M's shape
    parser.add_argument("--pairs", type=int, default=64, help="preference pairs (the pipeline's default dpo_train)")
    parser.add_argument("--prompt-words", type=int, default=40)
    parser.add_argument("--response-words", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4, help="DPO batch size (pairs)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--weight", type=float, default=10.0, help="penalty weight (the released code's ALPHA)")
    parser.add_argument("--delta-w-sigma", default="median",
                        help="kernel width of the delta_w form ('median' as config/smoke.yaml; lora_a uses 1.0)")
    parser.add_argument("--max-rows", type=int, default=256, help="delta_w form: sampled output rows per module")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per penalty mode")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the precompute comparison")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the precompute comparison")
    parser.add_argument("--skip-precompute", action="store_true", help="only the penalty part")
    return C.parse_with_preset(parser, argv, QUICK)


def make_pairs(n: int, prompt_words: int, response_words: int, seed: int) -> pd.DataFrame:
    """Pairs of near-constant token length: the same texts with a zero-padded pair number."""
    rng = random.Random(seed)
    words = C.random_words(2000, C.WORDS_SEED)
    prompt, chosen, rejected = (C.zipf_text(words, k, rng) for k in (prompt_words, response_words, response_words))
    return pd.DataFrame({
        "pair_id": [f"p{i:04d}" for i in range(n)],
        "prompt": [[{"role": "user", "content": f"{prompt} {i:04d}?"}] for i in range(n)],
        "chosen": [f"{chosen} {i:04d}." for i in range(n)],
        "rejected": [f"{rejected} {i:04d}." for i in range(n)],
    })


def lora_settings(args) -> LoraSettings:
    return LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=0.0,
                        target_modules=tuple(args.target_modules.split(",")))


def dpo_settings(args, **changes) -> DPOSettings:
    base = dict(batch_size=args.batch_size, max_length=args.max_length, max_prompt_length=args.max_prompt_length,
                learning_rate=5e-4, save_steps=10**9, seed=args.seed)
    return DPOSettings(**{**base, **changes})


def penalty_settings(args, form: str) -> PenaltySettings:
    sigma = 1.0 if form == "lora_a" else (args.delta_w_sigma if args.delta_w_sigma == "median" else float(args.delta_w_sigma))
    return PenaltySettings(kind="hsic", weight=args.weight, form=form, sigma=sigma, max_rows=args.max_rows)


class RotatePenalty(TrainerCallback):
    """Per optimizer step: set the penalty mode (rotating through MODES) and time the step."""

    def __init__(self, trainer: DecorrelatedDPOTrainer, penalties: dict, settings: dict, warmup: int) -> None:
        self.trainer, self.penalties, self.settings, self.warmup = trainer, penalties, settings, warmup
        self.times = {clock: {m: [] for m in MODES} for clock in C.CLOCKS}
        self.mode, self.start = MODES[0], (0.0, 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self.mode = MODES[state.global_step % len(MODES)]
        # benchmark-only toggles of trainer internals: the penalty term, and TRL's precompute switch (the dataset
        # keeps its precomputed columns; with the switch off TRL ignores them and runs the reference forward)
        self.trainer._decorrelation = self.penalties[self.mode]
        self.trainer.penalty = self.settings[self.mode]
        self.trainer.precompute_ref_logps = self.mode != "off_ref_every_step"
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - self.start[0], time.process_time() - self.start[1]
        if state.global_step > self.warmup:  # global_step is already incremented here
            self.times["wall"][self.mode].append(wall)
            self.times["cpu"][self.mode].append(cpu)


def penalty_timing(args, root: Path, sft_dir: Path, frozen_dir: Path, pairs: pd.DataFrame) -> dict:
    """Interleaved step times with the penalty off / lora_a / delta_w, plus the penalty alone."""
    from peft import LoraConfig, get_peft_model
    from trl import DPOConfig

    lora = lora_settings(args)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    torch.manual_seed(args.seed)
    on_cuda = torch.cuda.is_available()
    base = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.bfloat16 if on_cuda else torch.float32)
    model = get_peft_model(base.to("cuda" if on_cuda else "cpu"),
                           LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                      target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM"))
    model.load_adapter(str(frozen_dir), adapter_name="helpful", is_trainable=False)
    model.set_adapter(TRAINED_ADAPTER)
    warmup = len(MODES)
    config = DPOConfig(  # as train_value_vector builds it, but a fixed number of steps and no checkpoints
        output_dir=str(root / "ckpt_penalty"), beta=0.1, learning_rate=5e-4, max_steps=warmup + len(MODES) * args.steps,
        per_device_train_batch_size=args.batch_size, max_length=None, precompute_ref_log_probs=True,
        save_strategy="no", logging_steps=1, seed=args.seed, use_cpu=not on_cuda,
        bf16=on_cuda, report_to=[], disable_tqdm=True, dataloader_num_workers=0)
    collator = PreferenceCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                  max_prompt_length=args.max_prompt_length)
    settings = {"off": penalty_settings(args, "lora_a"), "lora_a": penalty_settings(args, "lora_a"),
                "delta_w": penalty_settings(args, "delta_w"), "off_ref_every_step": penalty_settings(args, "lora_a")}
    with quiet_progress_bars():
        trainer = DecorrelatedDPOTrainer(model, args=config, train_dataset=preference_dataset(pairs),
                                         processing_class=tokenizer, data_collator=collator,
                                         penalty=settings["lora_a"], frozen_adapters=["helpful"])
        no_penalty = DecorrelationPenalty([], settings["off"])
        penalties = {"off": no_penalty, "off_ref_every_step": no_penalty, "lora_a": trainer._decorrelation,
                     "delta_w": DecorrelationPenalty(collect_lora_pairs(model, TRAINED_ADAPTER, ["helpful"], None,
                                                                        args.max_rows), settings["delta_w"])}
        callback = RotatePenalty(trainer, penalties, settings, warmup)
        trainer.add_callback(callback)
        with contextlib.redirect_stdout(io.StringIO()):  # TRL/transformers print every log dict
            trainer.train()

    # The penalty alone, forward + backward, as the trainer computes it (median of many calls).
    def penalty_step(form: str) -> None:
        for _ in range(5):
            (penalties[form]() * args.weight).backward()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    alone = {clock: {} for clock in C.CLOCKS}
    for form in ("lora_a", "delta_w"):
        samples = [C.measure(penalty_step, form) for _ in range(7)]
        for i, clock in enumerate(C.CLOCKS):
            alone[clock][form] = C.median([x[i] for x in samples]) / 5
    with torch.no_grad():
        values = {form: float(penalties[form]()) for form in ("lora_a", "delta_w")}
    model.zero_grad(set_to_none=True)

    result = {"steps_per_mode": {mode: len(ts) for mode, ts in callback.times["wall"].items()},
              "lora_module_pairs": len(penalties["lora_a"].pairs),
              "penalty_values": values}
    for clock in C.CLOCKS:
        t = {mode: C.median(ts) for mode, ts in callback.times[clock].items()}
        r = {
            "step_seconds_median": {mode: round(v, 4) for mode, v in t.items()},
            "step_seconds": {mode: [round(x, 4) for x in ts] for mode, ts in callback.times[clock].items()},
            "penalty_alone_seconds": {form: round(v, 5) for form, v in alone[clock].items()},
        }
        for form in ("lora_a", "delta_w"):
            r[f"hsic_overhead_{form}"] = round((t[form] - t["off"]) / t[form], 4)
            r[f"hsic_overhead_{form}_isolated"] = round(alone[clock][form] / (t["off"] + alone[clock][form]), 4)
        # reference forward as a fraction x of a precomputed-reference step, and the bound it sets on the speedup of
        # precomputing over E epochs: (1 + x) / (1 + x / E) < 1 + x (precompute = one reference pass over the data)
        x = (t["off_ref_every_step"] - t["off"]) / t["off"]
        r["ref_forward_fraction_of_step"] = round(x, 4)
        r["ref_precompute_speedup_bound"] = round((1 + x) / (1 + x / args.epochs), 3)
        result[clock] = r
    return result


def precompute_timing(args, root: Path, sft_dir: Path, frozen_dir: Path, pairs: pd.DataFrame) -> dict:
    """Whole train_value_vector runs, precomputed reference log-probs vs reference forward every step."""
    times = {clock: {True: [], False: []} for clock in C.CLOCKS}
    for repeat in range(args.repeats):
        # A new seed per repeat gives a new adapter init, hence a new TRL precompute cache key: no cache hits.
        order = (True, False) if repeat % 2 == 0 else (False, True)
        for precompute in order:
            name = f"run{repeat}_{'pre' if precompute else 'live'}"
            with contextlib.redirect_stdout(io.StringIO()):
                wall, cpu = C.measure(
                    train_value_vector,
                    sft_dir, pairs, root / name, frozen_vectors={"helpful": frozen_dir}, lora=lora_settings(args),
                    dpo=dpo_settings(args, epochs=args.epochs, precompute_ref_log_probs=precompute,
                                     seed=args.seed + 1 + repeat),
                    penalty=penalty_settings(args, "lora_a"), checkpoint_dir=root / f"{name}.ckpt",
                    threads=args.threads)
            times["wall"][precompute].append(wall)
            times["cpu"][precompute].append(cpu)
            print(f"  {args.epochs}-epoch run, precompute_ref_log_probs={precompute}: {wall:.2f}s wall, {cpu:.2f}s cpu",
                  flush=True)
    result = {"epochs": args.epochs, "optimizer_steps": args.epochs * -(-len(pairs) // args.batch_size)}
    for clock in C.CLOCKS:
        t = times[clock]
        result[clock] = {
            "seconds_precompute": [round(x, 3) for x in t[True]],
            "seconds_every_step": [round(x, 3) for x in t[False]],
            # median of paired ratios (each run against the run next to it)
            "ref_precompute_speedup": round(C.median([live / pre for live, pre in zip(t[False], t[True])]), 3),
        }
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mva_dpo_step_") as tmp:
        root = Path(tmp)
        tokenizer = C.build_tokenizer(args.vocab, seed=args.seed)
        shape = C.shape_from_args(args)
        sft_dir = C.save_policy(shape, tokenizer, root / "models/sft", seed=args.seed)
        model = AutoModelForCausalLM.from_pretrained(sft_dir)
        frozen_dir = C.save_value_vector(model, root / "value_vectors/independent/helpful", seed=args.seed + 1,
                                         r=args.lora_r, alpha=args.lora_alpha,
                                         target_modules=args.target_modules.split(","), b_std=0.02)
        del model
        pairs = make_pairs(args.pairs, args.prompt_words, args.response_words, args.seed)
        lengths = [len(tokenizer(tokenizer.apply_chat_template([*p, {"role": "assistant", "content": c}],
                                                               tokenize=False), add_special_tokens=False)["input_ids"])
                   for p, c in zip(pairs["prompt"], pairs["chosen"])]
        clock = C.pick_clock(args.clock, "cuda" if torch.cuda.is_available() else "cpu", args.threads)
        C.print_header("DPO step benchmark", {
            "policy": shape.describe(),
            "lora": f"r={args.lora_r}, alpha={args.lora_alpha}, modules={args.target_modules}; 1 frozen value vector",
            "pairs": f"{args.pairs}, batch {args.batch_size}, ~{int(sum(lengths) / len(lengths))} tokens per "
                     f"prompt+chosen sequence",
            "penalty": f"hsic weight {args.weight}; lora_a sigma 1.0; delta_w sigma {args.delta_w_sigma}, "
                       f"max_rows {args.max_rows}",
            "headline_clock": clock,
        })
        results: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                         "machine": C.machine(), "policy": shape.describe(), "tokens_per_sequence": lengths[0],
                         "headline_clock": clock}
        penalty = penalty_timing(args, root, sft_dir, frozen_dir, pairs)
        results["penalty"] = penalty
        for c in C.CLOCKS:
            pc = penalty[c]
            print(f"[{c}] step seconds (median of {penalty['steps_per_mode']} interleaved steps): "
                  f"{json.dumps(pc['step_seconds_median'])}; penalty alone (forward+backward, "
                  f"{penalty['lora_module_pairs']} module pairs): {json.dumps(pc['penalty_alone_seconds'])}")
            for form in ("lora_a", "delta_w"):
                print(f"[{c}] hsic_overhead_{form}: {pc[f'hsic_overhead_{form}']} "
                      f"(isolated: {pc[f'hsic_overhead_{form}_isolated']})", flush=True)
            print(f"[{c}] reference forward = {pc['ref_forward_fraction_of_step']} of a step -> precompute speedup "
                  f"over {args.epochs} epochs at most {pc['ref_precompute_speedup_bound']} (fixed costs excluded)")
        if not args.skip_precompute:
            pre = results["precompute"] = precompute_timing(args, root, sft_dir, frozen_dir, pairs)
            for c in C.CLOCKS:
                print(f"[{c}] {args.epochs}-epoch runs: precompute {pre[c]['seconds_precompute']}s, every step "
                      f"{pre[c]['seconds_every_step']}s; speedup {pre[c]['ref_precompute_speedup']}")
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["loadavg_1m_end"] = C.machine()["loadavg_1m"]
    print(f"wall time: {results['wall_seconds']}s, load average at end: {results['loadavg_1m_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"hsic_overhead_delta_w={penalty[clock]['hsic_overhead_delta_w']}")
    print(f"hsic_overhead={penalty[clock]['hsic_overhead_lora_a']}")
    if "precompute" in results:
        print(f"ref_precompute_speedup={results['precompute'][clock]['ref_precompute_speedup']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
