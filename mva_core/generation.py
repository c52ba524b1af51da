"""Batched generation over a λ grid: every (grid point, prompt) row in one length-sorted queue.

Rows of different grid points share a batch (per-row λ through ``ValueMixer``), prompts are left-padded, batches
are length-homogeneous and shrink on out-of-memory. A batch holds at most ``batch_size`` rows and, with
``max_batch_tokens``, at most that many padded tokens: rows × (longest prompt in the batch + ``max_new_tokens``), the
KV-cache length the batch ends with. The queue is cut into fixed shards (independent of the batching); with
``shard_dir`` each finished shard is written as Parquet and reused by a rerun.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from mva_core.adapters import ADAPTER_WEIGHTS
from mva_core.artifacts import config_hash, file_sha256
from mva_core.bos import check_leading_bos, expected_bos
from mva_core.combine import ValueMixer
from mva_core.data.errors import DataError
from mva_core.progress import LineProgress, row_progress
from mva_core.shards import run_sharded

LAMBDA_PREFIX = "lam_"
RESULT_COLUMNS = ["point_id", "prompt_id", "response", "n_prompt_tokens", "n_response_tokens", "finished"]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding options. With ``do_sample`` each batch is seeded with ``seed`` + its first queue position, so
    sampled outputs are reproducible for the same inputs and batching but depend on the batch composition.

    ``batch_size`` caps the rows of a batch; ``max_batch_tokens`` (None: no cap) also caps its padded tokens, rows ×
    (longest prompt + ``max_new_tokens``), so long prompts go in smaller batches (a row over the budget goes alone).
    Greedy outputs do not depend on either. A reply ends at EOS or at the first of ``stop_strings`` (e.g. the HH
    transcript's next ``\n\nHuman:`` turn), which is cut off."""

    max_new_tokens: int = 64
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_batch_tokens: int | None = None
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        for name in ("max_new_tokens", "batch_size", "max_batch_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"GenerationSettings.{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class _Row:
    """One queue entry: a prompt at a grid point."""

    position: int
    point_id: object
    prompt_id: object
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
) -> pd.DataFrame:
    """Answer every prompt at every grid point; rows ordered by (point_id, prompt_id), columns ``RESULT_COLUMNS``.

    ``prompts``: prompt_id, prompt (chat messages). ``points``: point_id and one ``lam_<value>`` column per
    ``mixer.values`` (none when ``mixer`` is None). Shards live in ``shard_dir/<fingerprint>/`` where the
    fingerprint covers the prompts, points, settings, shard size and adapter files (not the base weights).
    """
    lam_columns = _lambda_columns(points, mixer)
    _check_unique(prompts, "prompt_id", "prompts")
    _check_unique(points, "point_id", "points")
    encoded = encode_prompts(tokenizer, prompts)
    check_context(model, prompts, encoded, settings.max_new_tokens)
    queue = _build_queue(points, prompts, encoded, lam_columns)
    folder = Path(shard_dir) / _fingerprint(model, mixer, queue, settings, shard_size) if shard_dir else None
    runner = _Runner(model, tokenizer, mixer, settings)
    with _eval_mode(model), torch.inference_mode(), row_progress(len(queue), "generate", progress) as bar:
        result = run_sharded(len(queue), shard_size, folder, lambda start, stop: runner.run(queue[start:stop], bar),
                             RESULT_COLUMNS, reused=bar.update)
    return result.sort_values(["point_id", "prompt_id"], kind="stable").reset_index(drop=True)


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


def _build_queue(points: pd.DataFrame, prompts: pd.DataFrame, encoded: list[list[int]], lam_columns: list[str]) -> list[_Row]:
    """All (point, prompt) rows, longest prompts first (out-of-memory shows up in the first batch)."""
    lams = points[lam_columns].to_numpy(dtype=float).tolist() if lam_columns else [[]] * len(points)
    pairs = [
        (point_id, tuple(point_lams), prompt_id, tuple(ids))
        for point_id, point_lams in zip(points["point_id"], lams)
        for prompt_id, ids in zip(prompts["prompt_id"], encoded)
    ]
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][3]))
    return [
        _Row(position, pairs[i][0], pairs[i][2], pairs[i][3], pairs[i][1]) for position, i in enumerate(order)
    ]


def _fingerprint(model: nn.Module, mixer: ValueMixer | None, queue: list[_Row], settings: GenerationSettings,
                 shard_size: int) -> str:
    adapters = {v: file_sha256(Path(d) / ADAPTER_WEIGHTS) for v, d in mixer.adapters.items()} if mixer else {}
    return config_hash({
        "model": getattr(getattr(model, "config", None), "_name_or_path", ""),
        "adapters": adapters,
        "queue": [(r.point_id, r.prompt_id, r.input_ids, r.lams) for r in queue],
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
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


@dataclass
class _Runner:
    """Generates queue rows batch by batch. After an out-of-memory error the limit that bound the failed batch
    shrinks for good: ``max_batch_tokens`` (when set) to half the batch's padded tokens, else ``batch_size`` to half
    its rows."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    mixer: ValueMixer | None
    settings: GenerationSettings
    batch_size: int = field(init=False)
    max_batch_tokens: int | None = field(init=False)
    pad_id: int = field(init=False)
    eos_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.batch_size = self.settings.batch_size
        self.max_batch_tokens = self.settings.max_batch_tokens
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
            size = _next_batch(lengths[start:], self.batch_size, self.max_batch_tokens, new_tokens)
            batch = rows[start: start + size]
            try:
                records.extend(self._generate(batch))
            except RuntimeError as err:
                if not _is_out_of_memory(err) or size == 1:
                    raise
                if self.max_batch_tokens is None:
                    self.batch_size = size // 2
                else:
                    self.max_batch_tokens = size * (max(lengths[start: start + size]) + new_tokens) // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += len(batch)
            bar.update(len(batch))
        return pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)

    def _generate(self, batch: list[_Row]) -> list[dict]:
        device = self.model.get_input_embeddings().weight.device
        width = max(len(r.input_ids) for r in batch)
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.input_ids)) + list(r.input_ids) for r in batch])
        attention_mask = torch.tensor([[0] * (width - len(r.input_ids)) + [1] * len(r.input_ids) for r in batch])
        lams = self.mixer.lambdas([r.lams for r in batch]) if self.mixer else contextlib.nullcontext()
        if self.settings.do_sample:
            torch.manual_seed(self.settings.seed + batch[0].position)
        with lams:
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **self._generate_kwargs()
            )
        return [self._record(row, tokens) for row, tokens in zip(batch, output[:, width:].tolist())]

    def _generate_kwargs(self) -> dict:
        s = self.settings
        kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, use_cache=True,
                      pad_token_id=self.pad_id, eos_token_id=self.eos_ids)
        if s.stop_strings:
            kwargs.update(stop_strings=list(s.stop_strings), tokenizer=self.tokenizer)
        if s.do_sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
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
            "response": response.strip(),
            "n_prompt_tokens": len(row.input_ids),
            "n_response_tokens": length,
            "finished": bool(stops) or stopped,
        }


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any stop string, and whether one occurred."""
    cuts = [i for i in (text.find(stop) for stop in stop_strings) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
