"""Shared helpers for the benchmarks: random-weight models, tokenizer, value vectors, reward models, prompts, timing.

Everything is built in-process from a seed (no download, no dataset text): a byte-level BPE tokenizer trained on
random words (so its vocabulary has exactly the requested size and every generated id decodes to distinct text),
a random-weight Llama of a given shape saved like the pipeline's ``models/sft/``, PEFT LoRA value vectors with
non-zero B saved like ``value_vectors/<method>/<value>/``, and tiny sequence-classification reward models.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import itertools
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# One CPU thread per process for tokenizers too, so process CPU time measures our own work only.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerBase  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python benchmarks/x.py`` from anywhere
    sys.path.insert(0, str(REPO))

from mva_core.tiny import build_tiny_tokenizer  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Shape:
    """A Llama shape (the vocabulary size is the tokenizer's)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    def describe(self) -> str:
        return (f"Llama hidden {self.hidden}, intermediate {self.intermediate}, {self.layers} layers, "
                f"{self.heads}/{self.kv_heads} heads, vocab {self.vocab}")


# SmolLM2-135M (the pipeline's default base model) for reference: hidden 576, intermediate 1536, 30 layers, 9/3 heads.
SMOLLM2_135M = Shape(576, 1536, 30, 9, 3, 49152)


def add_shape_args(parser: argparse.ArgumentParser, hidden: int, intermediate: int, layers: int, heads: int,
                   kv_heads: int, vocab: int, prefix: str = "", what: str = "policy") -> None:
    """--{prefix}hidden/intermediate/layers/heads/kv-heads/vocab flags with the given defaults."""
    p = f"--{prefix}"
    parser.add_argument(f"{p}hidden", type=int, default=hidden, help=f"{what} hidden size")
    parser.add_argument(f"{p}intermediate", type=int, default=intermediate, help=f"{what} MLP size")
    parser.add_argument(f"{p}layers", type=int, default=layers, help=f"{what} layers")
    parser.add_argument(f"{p}heads", type=int, default=heads, help=f"{what} attention heads")
    parser.add_argument(f"{p}kv-heads", type=int, default=kv_heads, help=f"{what} key/value heads")
    if vocab:
        parser.add_argument(f"{p}vocab", type=int, default=vocab, help="vocabulary size (tokenizer and models)")


def shape_from_args(args: argparse.Namespace, prefix: str = "", vocab: int | None = None) -> Shape:
    p = prefix.replace("-", "_")
    return Shape(
        hidden=getattr(args, f"{p}hidden"),
        intermediate=getattr(args, f"{p}intermediate"),
        layers=getattr(args, f"{p}layers"),
        heads=getattr(args, f"{p}heads"),
        kv_heads=getattr(args, f"{p}kv_heads"),
        vocab=vocab if vocab is not None else args.vocab,
    )


def random_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 8))) for _ in range(n)]


@functools.lru_cache(maxsize=8)
def _zipf_cum_weights(n: int) -> tuple[float, ...]:
    return tuple(itertools.accumulate(1 / (r + 1) for r in range(n)))


def zipf_text(words: list[str], n: int, rng: random.Random) -> str:
    """``n`` words drawn with Zipf frequencies (rank r has weight 1/r), like natural text."""
    return " ".join(rng.choices(words, cum_weights=_zipf_cum_weights(len(words)), k=n))


WORDS_SEED = 12345  # the word list shared by the tokenizer corpus and the prompts


def build_tokenizer(vocab: int, seed: int = 0) -> PreTrainedTokenizerBase:
    """Byte-level BPE with exactly ``vocab`` ids, chat template, pad/eos tokens.

    Trained on Zipf-distributed random words, so frequent words become single tokens and the prompts (drawn the
    same way) have about natural text's tokens per word.
    """
    rng = random.Random(seed)
    words = random_words(max(2 * vocab, 2000), WORDS_SEED)
    corpus = [zipf_text(words, 50, rng) for _ in range(max(1000, vocab // 4))]
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=vocab)
    if len(tokenizer) != vocab:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} ids, wanted {vocab} (corpus too small)")
    return tokenizer


def llama_config(shape: Shape, tokenizer: PreTrainedTokenizerBase, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **extra,
    )


def save_policy(shape: Shape, tokenizer: PreTrainedTokenizerBase, folder: Path, seed: int = 0,
                never_stop: bool = False) -> Path:
    """Save a random-weight Llama + tokenizer like the pipeline's ``models/sft/`` (fp32 safetensors).

    ``never_stop``: the generation config's EOS is ``vocab_size`` (an id the model cannot produce), so every
    generation runs exactly ``max_new_tokens`` tokens on every path (equal token counts for fair timing).
    """
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(shape, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = shape.vocab if never_stop else tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_value_vector(model: torch.nn.Module, folder: Path, seed: int, r: int, alpha: int,
                      target_modules: list[str], b_std: float) -> Path:
    """A PEFT LoRA adapter (PEFT's own A init, B ~ N(0, b_std²) so ΔW ≠ 0) saved like a pipeline value vector."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules, bias="none",
                        task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=b_std)
    peft_model.save_pretrained(folder)
    return folder


def save_reward_model(shape: Shape, tokenizer: PreTrainedTokenizerBase, folder: Path, seed: int) -> Path:
    """A random-weight Llama sequence-classification model (1 label) + tokenizer, as a reward-model dir."""
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(llama_config(shape, tokenizer, num_labels=1))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_prompts(n: int, min_words: int, max_words: int, seed: int, vocab: int) -> pd.DataFrame:
    """``prompt_id``, ``prompt`` (one user message of Zipf-distributed words).

    Lengths are log-spaced over [min_words, max_words] (many short prompts, a few long ones, like HH-RLHF's).
    """
    rng = random.Random(seed)
    words = random_words(max(2 * vocab, 2000), WORDS_SEED)
    rows = []
    for i in range(n):
        length = round(min_words * (max_words / min_words) ** (i / max(n - 1, 1)))
        rows.append({"prompt_id": f"p{i:04d}", "prompt": [{"role": "user", "content": zipf_text(words, length, rng) + "?"}]})
    return pd.DataFrame(rows)


def product_grid(values: list[str], lambdas: list[float]) -> pd.DataFrame:
    """Box grid: every combination of ``lambdas`` over the values (``point_id``, ``lam_<value>``)."""
    combos = list(itertools.product(lambdas, repeat=len(values)))
    frame = pd.DataFrame(combos, columns=[f"lam_{v}" for v in values])
    frame.insert(0, "point_id", range(len(frame)))
    return frame


CLOCKS = ("wall", "cpu")


class Stopwatch:
    """Wall-clock and process-CPU seconds accumulated per phase.

    With one torch thread on a shared CPU, process CPU time is what the work costs on an idle machine (the
    scheduler's time slices given to other jobs are excluded); wall time is what a user waits.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - wall
            self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - cpu

    def total(self, clock: str) -> float:
        return sum(getattr(self, clock).values())

    def phases(self, clock: str) -> dict[str, float]:
        return {k: round(v, 3) for k, v in getattr(self, clock).items()}


def measure(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def pick_clock(clock: str, device: str, threads: int) -> str:
    """``auto``: CPU time for single-threaded CPU runs (robust to other jobs on the machine), else wall time."""
    if clock != "auto":
        return clock
    return "cpu" if device == "cpu" and threads == 1 else "wall"


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def machine() -> dict:
    """CPU model, cores, load average and library versions, for the results table."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(Exception):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    import transformers

    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(Exception):
        import peft
        import trl

        info.update(peft=peft.__version__, trl=trl.__version__)
    return info


def print_header(title: str, settings: dict) -> None:
    print(f"== {title} ==")
    for key, value in {**machine(), **settings}.items():
        print(f"  {key}: {value}")
    sys.stdout.flush()


def benchmark_parser(doc: str, preset: dict) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc``, with ``--quick`` applying ``preset``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"the quick preset (a few minutes on 2 CPU cores): {preset}; explicit flags override it")
    return parser


def parse_with_preset(parser, argv: list[str] | None, preset: dict):
    """Add the options every benchmark has (--threads, --clock, --json, --seed), parse ``argv`` and, with
    ``--quick``, apply ``preset`` to the options not given explicitly."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: with another job on the machine, 2 threads made tiny ops erratic)")
    parser.add_argument("--clock", choices=("auto", *CLOCKS), default="auto",
                        help="clock of the headline ratios (both are always printed); auto: process CPU time "
                             "for --threads 1 on CPU (robust to other jobs on the machine), else wall time")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        apply_preset(args, preset, argv)
    return args


def apply_preset(args, preset: dict, argv: list[str] | None) -> None:
    """Set ``preset``'s values on ``args`` except for options given explicitly on the command line."""
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
    for key, value in preset.items():
        if key not in given:
            setattr(args, key, value)
