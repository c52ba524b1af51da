"""Sampling seeded per row: a row's reply depends on its own seed, never on the batch it shares.

``transformers``' own sampling draws every row of a batch from one random stream (``torch.multinomial``), so a
sampled reply would change with the batch size, an out-of-memory halving or a job split. ``RowSampler`` samples
inside greedy decoding instead: a logits processor applies temperature, top-k and top-p with transformers' own
warpers (in the order transformers applies them when sampling) and adds Gumbel noise drawn from the row's own
generator; the argmax of scores plus Gumbel noise is a draw from the softmax of the scores (the Gumbel-max trick).
Row r's t-th token uses the t-th draw of generator r, whatever else is in the batch. ``row_seed`` derives the seed of
a row from the run's sampling seed, the grid point, the prompt and the sample index.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


def row_seed(seed: int, point_id: object, prompt_id: object, sample: int) -> int:
    """A 63-bit seed for one (grid point, prompt, sample index) row, from the sampling ``seed`` (sha256-based).

    The method is not part of it: two methods' rows at the same point id and prompt share their noise (common random
    numbers, which the paired comparisons between methods benefit from), as do the training seeds' rows."""
    text = json.dumps([seed, str(point_id), str(prompt_id), sample])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


class RowSampler(LogitsProcessor):
    """Temperature, top-k (None: off) and top-p, then Gumbel noise from one generator per batch row, seeded with
    ``seeds`` (one per row, in batch order). Use it with greedy decoding (``do_sample=False``)."""

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_k: int | None = None,
                 top_p: float = 1.0) -> None:
        warpers = []
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k is not None:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.seeds = list(seeds)
        self.generators: list[torch.Generator] | None = None  # made on the scores' device at the first step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.seeds):
            raise ValueError(f"RowSampler has {len(self.seeds)} row seeds but the batch has {scores.shape[0]} rows")
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        scores = self.warpers(input_ids, scores)
        vocabulary = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocabulary, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=torch.finfo(uniform.dtype).tiny)))
        return scores + gumbel.to(scores.dtype)
