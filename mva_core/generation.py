"""Batched generation over a λ grid: every (grid point, prompt, sample) row in one length-sorted queue.

Rows of different grid points share a batch (per-row λ through ``ValueMixer``), prompts are left-padded, batches
are length-homogeneous and shrink on out-of-memory. A batch holds at most ``batch_size`` rows and, with
``max_batch_tokens``, at most that many padded tokens: rows × (longest prompt in the batch + ``max_new_tokens``), the
KV-cache length the batch ends with. Sampling is seeded per row (``mva_core.sampling``), so no reply depends on the
batching. The queue can be split into ``parts`` (every ``parts``-th row, for one job each; ``merge_parts`` joins them)
and is cut into fixed shards (independent of the batching); with ``shard_dir`` each finished shard is written as
Parquet and reused by a rerun.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from mva_core.adapters import ADAPTER_WEIGHTS
from mva_core.artifacts import config_hash, file_sha256
from mva_core.bos import check_leading_bos, expected_bos
from mva_core.combine import ValueMixer
from mva_core.data.errors import DataError
from mva_core.progress import LineProgress, row_progress
from mva_core.sampling import RowSampler, row_seed
from mva_core.shards import run_sharded

log = logging.getLogger(__name__)

LAMBDA_PREFIX = "lam_"
RESULT_COLUMNS = ["point_id", "prompt_id", "sample", "response", "n_prompt_tokens", "n_response_tokens", "finished"]
ROW_KEY = ["point_id", "prompt_id", "sample"]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding options: greedy, or with ``do_sample`` temperature, top-k (None: off) and top-p sampling, seeded per
    row from ``seed``, the grid point, the prompt and the sample index (``mva_core.sampling``), so a sampled reply
    does not depend on the batch size, an out-of-memory halving or a job split. ``samples_per_prompt`` replies per
    prompt and point (sampling only; the evaluation averages their rewards within the prompt).

    ``batch_size`` caps the rows of a batch; ``max_batch_tokens`` (None: no cap) also caps its padded tokens, rows ×
    (longest prompt + ``max_new_tokens``), so long prompts go in smaller batches (a row over the budget goes alone).
    No output depends on either. A reply ends at EOS or at the first of ``stop_strings`` (e.g. the HH transcript's
    next ``\n\nHuman:`` turn), which is cut off."""

    max_new_tokens: int = 64
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    samples_per_prompt: int = 1
    seed: int = 0
    max_batch_tokens: int | None = None
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        for name in ("max_new_tokens", "batch_size", "max_batch_tokens", "top_k", "samples_per_prompt"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"GenerationSettings.{name} must be >= 1, got {value}")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"GenerationSettings: temperature must be > 0 and top_p in (0, 1], got "
                             f"{self.temperature} and {self.top_p}")
        if self.samples_per_prompt > 1 and not self.do_sample:
            raise ValueError(f"GenerationSettings.samples_per_prompt is {self.samples_per_prompt}, but greedy decoding "
                             "gives the same reply every time: set do_sample to sample several")

    def sampler(self, rows: Sequence[_Row]) -> RowSampler | None:
        """The per-row sampler of a batch of ``rows`` (None for greedy decoding)."""
        if not self.do_sample:
            return None
        seeds = [row_seed(self.seed, row.point_id, row.prompt_id, row.sample) for row in rows]
        return RowSampler(seeds, self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class _Row:
    """One queue entry: one sample of a prompt at a grid point."""

    position: int
    point_id: object
    prompt_id: object
    sample: int
    input_ids: tuple[int, ...]
    lams: tuple[float, ...]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of one prompt rendered with the chat template and the assistant generation prompt; they start with
    exactly one BOS token where the tokenizer expects one (``mva_core.bos``; else ValueError)."""
    text = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    check_leading_bos(ids, expected_bos(tokenizer), "generation prompt")
    return ids


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: pd.DataFrame) -> list[list[int]]:
    """``encode_prompt`` of every prompt."""
    encoded = []
    for prompt_id, messages in zip(prompts["prompt_id"], prompts["prompt"]):
        try:
            encoded.append(encode_prompt(tokenizer, messages))
        except Exception as err:
            raise ValueError(f"prompt {prompt_id!r}: chat template failed: {err}") from err
    return encoded


def check_context(model: nn.Module, prompts: pd.DataFrame, encoded: Sequence[Sequence[int]], max_new_tokens: int) -> None:
    """Raise DataError naming the first prompt whose tokens plus ``max_new_tokens`` exceed the model's positions
    (``max_position_embeddings``; nothing is checked for a model whose config has none): never truncated."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(positions, int):
        return
    for prompt_id, ids in zip(prompts["prompt_id"], encoded):
        if len(ids) + max_new_tokens > positions:
            raise DataError(f"prompt {prompt_id!r} has {len(ids):,} tokens: with max_new_tokens {max_new_tokens:,} it "
                            f"needs {len(ids) + max_new_tokens:,} positions, but the model has {positions:,} "
                            "(the evaluation-prompts job skips such prompts: evaluation.on_long_prompt)")


def plan_batches(prompt_lengths: Sequence[int], settings: GenerationSettings) -> list[int]:
    """Row counts of the batches that ``prompt_lengths`` (queue order: longest first) are cut into."""
    sizes, start = [], 0
    while start < len(prompt_lengths):
        sizes.append(_next_batch(prompt_lengths[start:], settings.batch_size, settings.max_batch_tokens,
                                 settings.max_new_tokens))
        start += sizes[-1]
    return sizes


def _next_batch(prompt_lengths: Sequence[int], max_rows: int, max_tokens: int | None, new_tokens: int) -> int:
    """How many of the leading ``prompt_lengths`` form the next batch (at least one)."""
    if max_tokens is None:
        return min(max_rows, len(prompt_lengths))
    rows = width = 0
    for length in prompt_lengths[:max_rows]:
        width = max(width, length)
        if rows and (rows + 1) * (width + new_tokens) > max_tokens:
            break
        rows += 1
    return rows


def generate_grid(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    mixer: ValueMixer | None,
    prompts: pd.DataFrame,
    points: pd.DataFrame,
    settings: GenerationSettings = GenerationSettings(),
    progress: bool = True,
    shard_dir: str | Path | None = None,
    shard_size: int = 2048,
    part: int = 0,
    parts: int = 1,
) -> pd.DataFrame:
    """Answer every prompt at every grid point (``settings.samples_per_prompt`` times); rows ordered by (point_id,
    prompt_id, sample), columns ``RESULT_COLUMNS``.

    ``prompts``: prompt_id, prompt (chat messages). ``points``: point_id and one ``lam_<value>`` column per
    ``mixer.values`` (none when ``mixer`` is None). With ``parts`` > 1 only part ``part`` (0-based) of the work is
    done: every ``parts``-th row of the longest-first queue, so each part gets long and short prompts alike;
    ``merge_parts`` joins the parts into the table one call with ``parts=1`` gives. Shards live in
    ``shard_dir/<fingerprint>/`` where the fingerprint covers the part's rows, settings, shard size and adapter files
    (not the base weights).
    """
    if not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}: need 0 <= part < parts")
    lam_columns = _lambda_columns(points, mixer)
    _check_unique(prompts, "prompt_id", "prompts")
    _check_unique(points, "point_id", "points")
    encoded = encode_prompts(tokenizer, prompts)
    check_context(model, prompts, encoded, settings.max_new_tokens)
    queue = _build_queue(points, prompts, encoded, lam_columns, settings.samples_per_prompt)[part::parts]
    folder = Path(shard_dir) / _fingerprint(model, mixer, queue, settings, shard_size) if shard_dir else None
    runner = _Runner(model, tokenizer, mixer, settings)
    with _eval_mode(model), torch.inference_mode(), row_progress(len(queue), "generate", progress) as bar:
        result = run_sharded(len(queue), shard_size, folder, lambda start, stop: runner.run(queue[start:stop], bar),
                             RESULT_COLUMNS, reused=bar.update)
    return result.sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def merge_parts(parts: Sequence[pd.DataFrame], prompts: pd.DataFrame, points: pd.DataFrame,
                samples_per_prompt: int = 1) -> pd.DataFrame:
    """The parts of a split ``generate_grid`` as one table, ordered by (point_id, prompt_id, sample) as one call
    gives it; ValueError unless every (point, prompt, sample) of ``points`` × ``prompts`` × ``samples_per_prompt``
    is there exactly once."""
    if not parts:
        raise ValueError("no generation parts to merge")
    merged = pd.concat(parts, ignore_index=True)
    missing_columns = [c for c in ROW_KEY if c not in merged.columns]
    if missing_columns:
        raise ValueError(f"generation parts lack columns {missing_columns} (have {list(merged.columns)})")
    keys = merged[ROW_KEY].astype(str)
    duplicated = keys[keys.duplicated()]
    if not duplicated.empty:
        raise ValueError(f"generation parts overlap: {len(duplicated)} rows twice, e.g. "
                         f"{duplicated.iloc[0].to_dict()}")
    expected = pd.MultiIndex.from_product([points["point_id"].astype(str), prompts["prompt_id"].astype(str),
                                           [str(i) for i in range(samples_per_prompt)]], names=ROW_KEY)
    found = pd.MultiIndex.from_frame(keys)
    missing, extra = expected.difference(found), found.difference(expected)
    if len(missing) or len(extra):
        example = dict(zip(ROW_KEY, (missing if len(missing) else extra)[0]))
        raise ValueError(f"generation parts do not cover the grid: {len(missing)} (point, prompt, sample) rows "
                         f"missing, {len(extra)} not asked for, e.g. {'missing' if len(missing) else 'extra'} "
                         f"{example}")
    return merged.sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def _lambda_columns(points: pd.DataFrame, mixer: ValueMixer | None) -> list[str]:
    present = [c for c in points.columns if c.startswith(LAMBDA_PREFIX)]
    expected = [LAMBDA_PREFIX + v for v in mixer.values] if mixer is not None else []
    if sorted(present) != sorted(expected):
        raise ValueError(f"points λ columns {sorted(present)} do not match the mixer's values {expected}")
    return expected


def _check_unique(frame: pd.DataFrame, column: str, name: str) -> None:
    if column not in frame.columns:
        raise ValueError(f"{name} has no {column!r} column (columns: {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"{name} is empty")
    duplicated = frame[column][frame[column].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{name}: duplicated {column} {duplicated[:5]}")


def _build_queue(points: pd.DataFrame, prompts: pd.DataFrame, encoded: list[list[int]], lam_columns: list[str],
                 samples: int = 1) -> list[_Row]:
    """All (point, prompt, sample) rows, longest prompts first (out-of-memory shows up in the first batch)."""
    lams = points[lam_columns].to_numpy(dtype=float).tolist() if lam_columns else [[]] * len(points)
    rows = [
        (point_id, tuple(point_lams), prompt_id, sample, tuple(ids))
        for point_id, point_lams in zip(points["point_id"], lams)
        for prompt_id, ids in zip(prompts["prompt_id"], encoded)
        for sample in range(samples)
    ]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][4]))
    return [_Row(position, rows[i][0], rows[i][2], rows[i][3], rows[i][4], rows[i][1]) for position, i in enumerate(order)]


def _fingerprint(model: nn.Module, mixer: ValueMixer | None, queue: list[_Row], settings: GenerationSettings,
                 shard_size: int) -> str:
    adapters = {v: file_sha256(Path(d) / ADAPTER_WEIGHTS) for v, d in mixer.adapters.items()} if mixer else {}
    return config_hash({
        "model": getattr(getattr(model, "config", None), "_name_or_path", ""),
        "adapters": adapters,
        "queue": [(r.point_id, r.prompt_id, r.sample, r.input_ids, r.lams) for r in queue],
        "settings": asdict(settings),
        "shard_size": shard_size,
    })


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _is_out_of_memory(err: RuntimeError) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


@dataclass
class MemoryBackoff:
    """The padded-token cap that out-of-memory errors put on batches, and how it grows back.

    An error on a batch of T padded tokens caps the batches after it at T/2; each batch that then succeeds doubles
    the cap again, up to ``GROW_BACK`` × the smallest batch that failed. So the batches return to what fits instead
    of staying halved (the queue is longest-first: the first batch is the one most likely to fail), and each further
    error lowers that ceiling by a quarter at least, so the errors stay few."""

    GROW_BACK = 0.75

    cap: int | None = None
    ceiling: int | None = None

    def failed(self, tokens: int) -> None:
        self.ceiling = tokens if self.ceiling is None else min(self.ceiling, tokens)
        self.cap = tokens // 2

    def succeeded(self) -> None:
        if self.cap is not None and self.ceiling is not None:
            self.cap = max(self.cap, min(2 * self.cap, int(self.GROW_BACK * self.ceiling)))

    def limit(self, max_batch_tokens: int | None) -> int | None:
        """The token budget of the next batch: the configured one (None: none) or the cap, whichever is lower."""
        limits = [t for t in (max_batch_tokens, self.cap) if t is not None]
        return min(limits) if limits else None


@dataclass
class _Runner:
    """Generates queue rows batch by batch: at most ``batch_size`` rows and the token budget of ``MemoryBackoff``
    (``max_batch_tokens`` until an out-of-memory error, which a single row may not have)."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    mixer: ValueMixer | None
    settings: GenerationSettings
    memory: MemoryBackoff = field(default_factory=MemoryBackoff)
    pad_id: int = field(init=False)
    eos_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        if eos is None:
            raise ValueError("neither the model's generation_config nor the tokenizer defines an EOS token")
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.eos_ids[0] if pad is None else pad

    def run(self, rows: list[_Row], bar: LineProgress | Any) -> pd.DataFrame:
        """Results of ``rows`` (any order)."""
        records: list[dict] = []
        lengths = [len(r.input_ids) for r in rows]
        new_tokens = self.settings.max_new_tokens
        start = 0
        while start < len(rows):
            budget = self.memory.limit(self.settings.max_batch_tokens)
            size = _next_batch(lengths[start:], self.settings.batch_size, budget, new_tokens)
            batch = rows[start: start + size]
            try:
                records.extend(self._generate(batch))
            except RuntimeError as err:
                if not _is_out_of_memory(err) or size == 1:
                    raise
                tokens = size * (max(lengths[start: start + size]) + new_tokens)
                self.memory.failed(tokens)
                log.warning("out of memory on %d rows (%d padded tokens): batches capped at %d padded tokens, "
                            "growing back to at most %d", size, tokens, self.memory.cap,
                            int(MemoryBackoff.GROW_BACK * self.memory.ceiling))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            self.memory.succeeded()
            start += len(batch)
            bar.update(len(batch))
        return pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)

    def _generate(self, batch: list[_Row]) -> list[dict]:
        device = self.model.get_input_embeddings().weight.device
        width = max(len(r.input_ids) for r in batch)
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.input_ids)) + list(r.input_ids) for r in batch])
        attention_mask = torch.tensor([[0] * (width - len(r.input_ids)) + [1] * len(r.input_ids) for r in batch])
        lams = self.mixer.lambdas([r.lams for r in batch]) if self.mixer else contextlib.nullcontext()
        with lams:
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **self._generate_kwargs(batch)
            )
        return [self._record(row, tokens) for row, tokens in zip(batch, output[:, width:].tolist())]

    def _generate_kwargs(self, batch: list[_Row]) -> dict:
        """Greedy decoding, with the per-row sampler as its last logits processor when sampling (``do_sample`` is
        never passed on: transformers' sampling would draw all rows from one random stream)."""
        s = self.settings
        kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=False, use_cache=True,
                      pad_token_id=self.pad_id, eos_token_id=self.eos_ids)
        if s.stop_strings:
            kwargs.update(stop_strings=list(s.stop_strings), tokenizer=self.tokenizer)
        sampler = s.sampler(batch)
        if sampler is not None:
            kwargs.update(logits_processor=LogitsProcessorList([sampler]))
        return kwargs

    def _record(self, row: _Row, tokens: list[int]) -> dict:
        stops = [i for i, token in enumerate(tokens) if token in self.eos_ids]
        length = stops[0] if stops else len(tokens)
        response, stopped = cut_at_stop(self.tokenizer.decode(tokens[:length], skip_special_tokens=True),
                                        self.settings.stop_strings)
        if stopped:
            length = len(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        return {
            "point_id": row.point_id,
            "prompt_id": row.prompt_id,
            "sample": row.sample,
            "response": response.strip(),
            "n_prompt_tokens": len(row.input_ids),
            "n_response_tokens": length,
            "finished": bool(stops) or stopped,
        }


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any stop string, and whether one occurred."""
    cuts = [i for i in (text.find(stop) for stop in stop_strings) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
