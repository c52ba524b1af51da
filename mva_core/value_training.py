"""Train one value vector: a DPO LoRA adapter, optionally decorrelated from frozen earlier value vectors.

The adapter being trained is PEFT's ``default``; TRL copies it to ``ref`` (a fresh LoRA has B = 0, so the reference
is the SFT model) and precomputes the reference log-probs. Earlier value vectors are loaded beside it under their
value names, frozen and inactive: they only enter the loss through ``mva_core.penalties``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from mva_core.artifacts import atomic_directory, library_versions, write_json, write_parquet
from mva_core.contracts import TRAINING_PAIRS, validate_table
from mva_core.dependence import delta_w_norm
from mva_core.penalties import DecorrelationPenalty, PenaltySettings, collect_lora_pairs, module_label
from mva_core.precision import Precision, resolve_precision
from mva_core.progress import ProgressLog
from mva_core.runtime import check_finite, resume_point, tracking_kwargs

TRAINED_ADAPTER = "default"
RESERVED_ADAPTERS = (TRAINED_ADAPTER, "ref")  # "ref" is TRL's copy of the fresh adapter
LOG_COLUMNS = ("step", "epoch", "loss", "dpo_loss", "penalty", "delta_w_norm", "rewards/accuracies", "rewards/margins", "learning_rate")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA shape of a value vector.

    ``dropout`` is written to the adapter config, but TRL's ``disable_dropout`` (on by default, as in the trl 0.9.6
    the released code used) sets every dropout, LoRA's included, to 0 while training.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class DPOSettings:
    """DPO optimisation settings.

    ``max_prompt_length`` keeps the end of over-long prompts; ``max_length`` then truncates prompt+response from
    the end. ``warmup_ratio`` is a fraction of the total steps.
    """

    beta: float = 0.1
    learning_rate: float = 5e-5
    epochs: int = 1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    max_prompt_length: int = 128
    precompute_ref_log_probs: bool = True
    save_steps: int = 50
    logging_steps: int = 1
    seed: int = 42
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    gradient_checkpointing: bool = False


@dataclass
class PreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, plus left truncation of the prompt and a pass-through ``pair_id`` list."""

    max_prompt_length: int | None = None

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.max_prompt_length is not None:
            examples = [{**ex, "prompt_ids": ex["prompt_ids"][-self.max_prompt_length :]} for ex in examples]
        batch = super().torch_call(examples)
        if "pair_id" in examples[0]:
            batch["pair_id"] = [ex["pair_id"] for ex in examples]
        return batch


class DecorrelatedDPOTrainer(DPOTrainer):
    """DPO on adapter ``default`` plus ``penalty.weight`` × a decorrelation penalty against ``frozen_adapters``.

    Logs ``dpo_loss`` and the unweighted ``penalty`` beside TRL's metrics; raises NonFiniteLossError on NaN/inf.
    """

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

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "pair_id"})

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


def train_value_vector(
    sft_model_dir: str | os.PathLike,
    pairs: pd.DataFrame,
    output_dir: str | os.PathLike,
    *,
    frozen_vectors: Mapping[str, str | os.PathLike],
    lora: LoraSettings,
    dpo: DPOSettings,
    penalty: PenaltySettings,
    checkpoint_dir: str | os.PathLike,
    threads: int | None = None,
    margin_weights: Mapping[str, float] | None = None,
    target_weight: float = 1.0,
    init_seed: int | None = None,
    precision: Precision | None = None,
    tracking: str = "none",
) -> Path:
    """DPO-train a LoRA value vector on ``pairs`` and write it to ``output_dir`` (atomically).

    With ``margin_weights`` (value → w_j, each value also in ``frozen_vectors``) the objective is MODPO for the
    weighting whose weight on this value is ``target_weight`` (see ``mva_core.modpo``).

    ``frozen_vectors`` maps value name -> directory of an earlier adapter to decorrelate from. Checkpoints go to
    ``checkpoint_dir`` every ``dpo.save_steps`` steps; a rerun with the same inputs and settings resumes from the
    latest one (checkpoints of a different run are discarded), and the directory is deleted once the result is
    written. ``init_seed`` seeds the fresh adapter's initialisation (default ``dpo.seed``); the workflow derives it
    from (training seed, value) with :func:`derive_seed`, so two values never start from the same LoRA weights
    while ``dpo.seed`` alone seeds the data order. ``precision`` (default fp32): the frozen base weights are
    loaded in its dtype and the forward runs under its autocast; LoRA weights, optimizer, losses and the penalty stay
    fp32. Output: ``adapter_model.safetensors`` + ``adapter_config.json`` (adapter ``default``
    only), ``training_log.parquet`` and ``metadata.json``.
    """
    started = time.monotonic()
    dataset = _preference_dataset(pairs)
    _check_frozen_vectors(frozen_vectors)
    frozen = {value: str(path) for value, path in frozen_vectors.items()}
    run = {
        "sft_model_dir": str(sft_model_dir),
        "pair_ids": pairs["pair_id"].astype(str).tolist(),
        "frozen_vectors": frozen,
        "margin_weights": dict(margin_weights or {}),
        "target_weight": target_weight,
        "init_seed": dpo.seed if init_seed is None else init_seed,
    }
    run["settings"] = {name: dataclasses.asdict(x) for name, x in (("lora", lora), ("dpo", dpo), ("penalty", penalty))}
    resume_from = resume_point(checkpoint_dir, run)
    if threads is not None:
        torch.set_num_threads(threads)
    precision = precision or resolve_precision("float32")

    tokenizer = AutoTokenizer.from_pretrained(sft_model_dir)
    base = AutoModelForCausalLM.from_pretrained(sft_model_dir, **precision.model_kwargs()).to(precision.device)
    set_seed(run["init_seed"])  # the fresh adapter's initialisation (the trainer reseeds with dpo.seed for data order)
    lora_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora_config)
    for value, adapter_dir in frozen.items():
        model.load_adapter(adapter_dir, adapter_name=value, is_trainable=False)
    model.set_adapter(TRAINED_ADAPTER)

    args = DPOConfig(
        output_dir=str(checkpoint_dir),
        beta=dpo.beta / target_weight if margin_weights else dpo.beta,
        learning_rate=dpo.learning_rate,
        num_train_epochs=dpo.epochs,
        per_device_train_batch_size=dpo.batch_size,
        gradient_accumulation_steps=dpo.grad_accum,
        max_length=None,  # truncation is done by PreferenceCollator, so TRL drops no pair for a long prompt
        precompute_ref_log_probs=dpo.precompute_ref_log_probs or bool(margin_weights),
        save_strategy="steps",
        save_steps=dpo.save_steps,
        save_total_limit=2,
        logging_steps=dpo.logging_steps,
        seed=dpo.seed,
        warmup_steps=dpo.warmup_ratio,
        lr_scheduler_type=dpo.lr_scheduler,
        activation_checkpointing=dpo.gradient_checkpointing,
        **precision.trainer_kwargs(),
        **tracking_kwargs(tracking, checkpoint_dir),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    collator = PreferenceCollator(
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        max_length=dpo.max_length,
        max_prompt_length=dpo.max_prompt_length,
    )
    objective: dict[str, Any] = {}
    trainer_class = DecorrelatedDPOTrainer
    if margin_weights:
        from mva_core.modpo import MODPOTrainer

        missing = sorted(set(margin_weights) - set(frozen))
        if missing:
            raise ValueError(f"MODPO margin values {missing} have no value vector in frozen_vectors")
        trainer_class, objective = MODPOTrainer, {"margin_weights": dict(margin_weights), "beta": dpo.beta}
    print(f"DPO: {len(pairs)} pairs; precomputing the reference model's log-probabilities", flush=True)
    with _quiet_progress_bars():
        trainer = trainer_class(
            model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=collator,
            penalty=penalty,
            precision=precision,
            frozen_adapters=[] if margin_weights else list(frozen),
            callbacks=[ProgressLog("MODPO" if margin_weights else "DPO")],
            **objective,
        )
        trainer.train(resume_from_checkpoint=resume_from)

    with atomic_directory(output_dir) as tmp:
        # An absolute base path: the adapter then loads with AutoPeftModelForCausalLM from any working directory
        # (after moving results/, pass the base model explicitly, or use mva-export).
        model.peft_config[TRAINED_ADAPTER].base_model_name_or_path = str(Path(sft_model_dir).resolve())
        model.save_pretrained(str(tmp), selected_adapters=[TRAINED_ADAPTER])
        write_parquet(training_log(trainer.state.log_history), tmp / "training_log.parquet")
        write_json(
            {
                "seed": dpo.seed,
                "init_seed": run["init_seed"],
                "sft_model_dir": run["sft_model_dir"],
                "frozen_vectors": frozen,
                "margin_weights": run["margin_weights"],
                "target_weight": target_weight,
                **run["settings"],
                "trl_disable_dropout": args.disable_dropout,
                "n_pairs": len(pairs),
                "delta_w_norms": {**delta_w_norms(model), "total": total_norm(delta_w_norms(model))},
                "global_steps": trainer.state.global_step,
                "resumed_from": Path(resume_from).name if resume_from else None,
                "precision": precision.describe(),
                "library_versions": library_versions(),
                "wall_time_s": round(time.monotonic() - started, 3),
            },
            tmp / "metadata.json",
        )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return Path(output_dir)


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


def derive_seed(training_seed: int, *parts: object) -> int:
    """A 32-bit seed from a training seed and names, e.g. ``derive_seed(42, "value", "helpful")`` (sha256-based)."""
    text = "/".join(str(x) for x in (training_seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def training_log(log_history: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-logging-step training records (TRL's metrics included), with the LOG_COLUMNS always present and first."""
    records = [entry for entry in log_history if "loss" in entry]
    df = pd.DataFrame.from_records(records)
    for column in LOG_COLUMNS:
        if column not in df.columns:
            df[column] = float("nan")
    return df[[*LOG_COLUMNS, *sorted(set(df.columns) - set(LOG_COLUMNS))]]


def _preference_dataset(pairs: pd.DataFrame) -> datasets.Dataset:
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


def _check_frozen_vectors(frozen_vectors: Mapping[str, str | os.PathLike]) -> None:
    for value, adapter_dir in frozen_vectors.items():
        if value in RESERVED_ADAPTERS:
            raise ValueError(f"frozen vector name {value!r} is reserved (reserved: {list(RESERVED_ADAPTERS)})")
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"frozen vector {value!r}: no adapter_config.json in {adapter_dir}")


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence the datasets and TRL precompute progress bars, which ``disable_tqdm`` does not cover."""
    bars_were_on = datasets.is_progress_bar_enabled()
    previous = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
