"""The DPO trainer of value vectors: TRL's ``DPOTrainer`` on adapter ``default`` plus a decorrelation penalty.

The adapter being trained is PEFT's ``default``; TRL copies it to ``ref`` (a fresh LoRA has B = 0, so the reference
is the SFT model) and precomputes the reference log-probs (with progress lines in the job log). Earlier value
vectors are loaded beside it under their value names, frozen and inactive: they only enter the loss through
``mva_core.penalties``. MODPO (``mva_core.modpo``) builds on this trainer.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import pandas as pd
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from tqdm.auto import tqdm
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from mva_core.contracts import TRAINING_PAIRS, validate_table
from mva_core.dependence import delta_w_norm
from mva_core.penalties import DecorrelationPenalty, PenaltySettings, collect_lora_pairs, module_label
from mva_core.precision import Precision, resolve_precision
from mva_core.progress import LineProgress, row_progress
from mva_core.training.guards import check_finite

TRAINED_ADAPTER = "default"
RESERVED_ADAPTERS = (TRAINED_ADAPTER, "ref")  # "ref" is TRL's copy of the fresh adapter
LOG_METRICS = ("dpo_loss", "penalty", "delta_w_norm", "rewards/accuracies", "rewards/margins")
"""Columns of a value vector's training_log.parquet after step, epoch and loss (see mva_core.training.records)."""


@dataclass
class PreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, plus left truncation of the prompt and a pass-through ``pair_id`` list.

    A prompt longer than ``max_prompt_length`` keeps its end, and its leading ``bos_token_id`` (the BOS of a
    tokenizer that expects one, ``mva_core.bos``; None: no such token) stays first."""

    max_prompt_length: int | None = None
    bos_token_id: int | None = None

    def truncate_prompt(self, ids: list[int]) -> list[int]:
        """The last ``max_prompt_length`` tokens of a prompt, the first of them its BOS if it starts with one."""
        if self.max_prompt_length is None or len(ids) <= self.max_prompt_length:
            return ids
        if self.bos_token_id is not None and ids[:1] == [self.bos_token_id]:
            return ids[:1] + ids[len(ids) - self.max_prompt_length + 1:]
        return ids[-self.max_prompt_length:]

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.max_prompt_length is not None:
            examples = [{**ex, "prompt_ids": self.truncate_prompt(list(ex["prompt_ids"]))} for ex in examples]
        batch = super().torch_call(examples)
        if "pair_id" in examples[0]:
            batch["pair_id"] = [ex["pair_id"] for ex in examples]
        return batch


class DecorrelatedDPOTrainer(DPOTrainer):
    """DPO on adapter ``default`` plus ``penalty.weight`` × a decorrelation penalty against ``frozen_adapters``.

    Logs ``dpo_loss``, the unweighted ``penalty`` and ‖ΔW‖ beside TRL's metrics; raises NonFiniteLossError on NaN/inf.
    """

    _ref_progress: LineProgress | tqdm | None = None  # set while the reference log-probs are precomputed

    def __init__(
        self, model: PeftModel, *args: Any, penalty: PenaltySettings, frozen_adapters: Sequence[str],
        precision: Precision | None = None, **kwargs: Any
    ):
        if not isinstance(model, PeftModel):
            raise TypeError(f"model must be a PeftModel with adapter {TRAINED_ADAPTER!r}, got {type(model).__name__}")
        self.penalty = penalty
        self.precision = precision or resolve_precision("float32")
        self.frozen_adapters = tuple(frozen_adapters)
        uses_penalty = penalty.active and bool(self.frozen_adapters)
        max_rows = penalty.max_rows if penalty.kind == "hsic" and penalty.form == "delta_w" else None
        # Built before TRL's (expensive) reference precompute so a missing adapter fails fast.
        pairs = (
            collect_lora_pairs(model, TRAINED_ADAPTER, self.frozen_adapters, penalty.modules, max_rows)
            if uses_penalty
            else []
        )
        self._decorrelation = DecorrelationPenalty(pairs, penalty)  # caches the frozen side on its first call
        super().__init__(model, *args, **kwargs)
        self._train_only_trained_adapter(model)

    @staticmethod
    def _train_only_trained_adapter(model: PeftModel) -> None:
        """TRL's "ref" copy and the frozen values must not train (PEFT's set_adapter flips these flags)."""
        for name, param in model.named_parameters():
            param.requires_grad_(".lora_" in name and f".{TRAINED_ADAPTER}." in name)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "pair_id" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "pair_id"]  # keep pair ids for error messages

    def _precompute_ref_logps(self, dataset: datasets.Dataset, name: str, batch_size: int) -> datasets.Dataset:
        """TRL's precompute of the reference log-probs (run once, before training), reporting its progress:
        ``reference log-probs (train): 64/640 rows (10%), elapsed .., ETA .., 3.20 rows/s`` per tenth."""
        with row_progress(len(dataset), f"reference log-probs ({name})") as progress:
            self._ref_progress = progress
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                self._ref_progress = None

    def compute_ref_log_probs(self, model, inputs):
        chosen, rejected = super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "pair_id"})
        if self._ref_progress is not None:
            self._ref_progress.update(len(chosen))
        return chosen, rejected

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pair_ids = inputs.get("pair_id")
        inputs = {k: v for k, v in inputs.items() if k != "pair_id"}
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        dpo_loss = result[0] if return_outputs else result
        if self._decorrelation.pairs:
            with self.precision.full_precision():
                penalty = self._decorrelation()
            loss = dpo_loss + self.penalty.weight * penalty
        else:
            penalty, loss = torch.zeros((), device=dpo_loss.device), dpo_loss
        for label, value in (("DPO loss", dpo_loss), ("decorrelation penalty", penalty)):
            check_finite(label, value, self.state.global_step + 1, pair_ids)
        metrics = self._metrics["train" if model.training else "eval"]
        metrics["dpo_loss"].append(dpo_loss.item())
        metrics["penalty"].append(penalty.item())
        metrics["delta_w_norm"].append(total_norm(delta_w_norms(model)))
        return (loss, result[1]) if return_outputs else loss


def delta_w_norms(model: PeftModel, adapter: str = TRAINED_ADAPTER) -> dict[str, float]:
    """‖ΔW‖_F of ``adapter`` per LoRA module (``mva_core.dependence.delta_w_norm``), so shrinkage is visible."""
    norms = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                factors = (module.lora_A[adapter].weight, module.lora_B[adapter].weight, float(module.scaling[adapter]))
                norms[module_label(name)] = delta_w_norm(factors)
    return norms


def total_norm(norms: Mapping[str, float]) -> float:
    """‖(ΔW_1, ..., ΔW_m)‖_F over modules."""
    return math.sqrt(sum(n * n for n in norms.values()))


def preference_dataset(pairs: pd.DataFrame) -> datasets.Dataset:
    """TRL conversational rows: the prompt messages, and chosen/rejected as one assistant message each."""
    validate_table(pairs, TRAINING_PAIRS)
    if pairs.empty:
        raise ValueError("no preference pairs to train on")
    duplicated = pairs["pair_id"][pairs["pair_id"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"duplicate pair_id {duplicated.iloc[0]!r} in preference pairs")
    rows = []
    for row in pairs.itertuples(index=False):
        try:
            prompt = [{"role": str(message["role"]), "content": str(message["content"])} for message in row.prompt]
        except (KeyError, TypeError):
            prompt = []
        if not prompt:
            raise ValueError(f"pair {row.pair_id!r}: prompt must be a non-empty list of {{role, content}} messages")
        rows.append(
            {
                "pair_id": str(row.pair_id),
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": str(row.chosen)}],
                "rejected": [{"role": "assistant", "content": str(row.rejected)}],
            }
        )
    return datasets.Dataset.from_list(rows)
