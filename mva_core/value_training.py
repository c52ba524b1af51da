"""Train one value vector: a DPO LoRA adapter, optionally decorrelated from frozen earlier value vectors, or a
MODPO adapter.

The trainers are ``mva_core.dpo_trainer.DecorrelatedDPOTrainer`` (DPO + decorrelation penalty) and
``mva_core.modpo.MODPOTrainer``; threads, precision, resume, progress, the atomic write, the training log and the
metadata come from ``mva_core.training.harness``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import DPOConfig

from mva_core.bos import expected_bos
from mva_core.dpo_trainer import (
    LOG_METRICS,
    RESERVED_ADAPTERS,
    TRAINED_ADAPTER,
    DecorrelatedDPOTrainer,
    PreferenceCollator,
    delta_w_norms,
    preference_dataset,
    total_norm,
)
from mva_core.lora import LoraSettings
from mva_core.model_origin import adapter_base
from mva_core.modpo import MODPOTrainer
from mva_core.penalties import PenaltySettings
from mva_core.precision import Precision
from mva_core.training.harness import TrainingJob


@dataclass(frozen=True)
class DPOSettings:
    """DPO optimisation settings.

    ``max_prompt_length`` keeps the end of over-long prompts; ``max_length`` then truncates prompt+response from
    the end. ``warmup_ratio`` is a fraction of the total steps.
    """

    TRAINER_FIELDS: ClassVar[tuple[str, ...]] = (
        "learning_rate", "epochs", "batch_size", "grad_accum", "save_steps", "logging_steps", "seed", "warmup_ratio",
        "lr_scheduler", "gradient_checkpointing",
    )

    beta: float = 0.1
    learning_rate: float = 5e-5
    epochs: float = 1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    max_prompt_length: int | None = 128
    precompute_ref_log_probs: bool = True
    save_steps: int = 50
    logging_steps: int = 1
    seed: int = 42
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    gradient_checkpointing: bool = False


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
    tracking_dir: str | os.PathLike | None = None,
) -> Path:
    """DPO-train a LoRA value vector on ``pairs`` and write it to ``output_dir`` (atomically).

    The adapter's ``base_model_name_or_path`` is the hub id (with the commit as ``revision``) where ``sft_model_dir``
    is a base loaded from the hub, else its absolute path (``mva_core.model_origin.adapter_base``); metadata.json's
    ``start_model_path`` is the absolute path of ``sft_model_dir`` either way.

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
    only), ``training_log.parquet`` and ``metadata.json`` (``mva_core.training.records``); ``tracking`` files go to
    ``tracking_dir``, which is kept.
    """
    dataset = preference_dataset(pairs)
    _check_frozen_vectors(frozen_vectors)
    frozen = {value: str(path) for value, path in frozen_vectors.items()}
    missing = sorted(set(margin_weights or {}) - set(frozen))
    if missing:
        raise ValueError(f"MODPO margin values {missing} have no value vector in frozen_vectors")
    modpo = bool(margin_weights)
    job = TrainingJob(
        stage="modpo" if modpo else "value_vector",
        label="MODPO" if modpo else "DPO",
        start_model_dir=sft_model_dir,
        pair_ids=pairs["pair_id"].astype(str).tolist(),
        settings={"lora": lora, "dpo": dpo, "penalty": penalty},
        checkpoint_dir=checkpoint_dir,
        precision=precision,
        tracking=tracking,
        tracking_dir=tracking_dir,
        threads=threads,
        details={
            "init_seed": dpo.seed if init_seed is None else init_seed,
            "frozen_vectors": frozen,
            "margin_weights": dict(margin_weights or {}),
            "target_weight": target_weight,
        },
    )
    with job:
        tokenizer = AutoTokenizer.from_pretrained(sft_model_dir)
        model = _fresh_adapter(sft_model_dir, lora, frozen, job.precision, job.details["init_seed"])
        args = job.arguments(
            DPOConfig,
            dpo,
            beta=dpo.beta / target_weight if modpo else dpo.beta,
            max_length=None,  # truncation is done by PreferenceCollator, so TRL drops no pair for a long prompt
            precompute_ref_log_probs=dpo.precompute_ref_log_probs or modpo,
        )
        collator = PreferenceCollator(
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            max_length=dpo.max_length,
            max_prompt_length=dpo.max_prompt_length,
            bos_token_id=expected_bos(tokenizer),
        )
        objective: dict[str, Any] = {"margin_weights": dict(margin_weights), "beta": dpo.beta} if modpo else {}
        if args.precompute_ref_log_probs:
            print(f"{job.label}: {len(pairs)} pairs; precomputing the reference model's log-probabilities", flush=True)
        trainer = (MODPOTrainer if modpo else DecorrelatedDPOTrainer)(
            model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=collator,
            penalty=penalty,
            precision=job.precision,
            frozen_adapters=[] if modpo else list(frozen),
            callbacks=job.callbacks(),
            **objective,
        )
        job.train(trainer)
        # The hub id of a base loaded from the hub, else the absolute local path: the adapter then loads with
        # AutoPeftModelForCausalLM anywhere (a local path: after moving results/, pass the base model explicitly).
        base = adapter_base(sft_model_dir)
        model.peft_config[TRAINED_ADAPTER].base_model_name_or_path = base.name_or_path
        model.peft_config[TRAINED_ADAPTER].revision = base.revision
        norms = delta_w_norms(model)
        return job.save(
            output_dir,
            # no embedding layers: none is trained and the vocabulary is the base's (PEFT's "auto" would ask the hub)
            lambda folder: model.save_pretrained(str(folder), selected_adapters=[TRAINED_ADAPTER],
                                                 save_embedding_layers=False),
            log_metrics=LOG_METRICS,
            trl_disable_dropout=args.disable_dropout,
            delta_w_norms={**norms, "total": total_norm(norms)},
            start_model_path=base.local_path,
        )


def _fresh_adapter(sft_model_dir: str | os.PathLike, lora: LoraSettings, frozen: Mapping[str, str],
                   precision: Precision, init_seed: int) -> PeftModel:
    """The SFT model (weights in ``precision``'s dtype, on its device) with a fresh adapter ``default`` initialised
    from ``init_seed``, and the frozen vectors loaded beside it."""
    base = AutoModelForCausalLM.from_pretrained(sft_model_dir, **precision.model_kwargs()).to(precision.device)
    lora.check_fits(base)
    set_seed(init_seed)  # the fresh adapter's initialisation (the trainer reseeds with dpo.seed for the data order)
    model = get_peft_model(base, lora.peft_config())
    for value, adapter_dir in frozen.items():
        model.load_adapter(adapter_dir, adapter_name=value, is_trainable=False)
    model.set_adapter(TRAINED_ADAPTER)
    return model


def derive_seed(training_seed: int, *parts: object) -> int:
    """A 32-bit seed from a training seed and names, e.g. ``derive_seed(42, "value", "helpful")`` (sha256-based)."""
    text = "/".join(str(x) for x in (training_seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _check_frozen_vectors(frozen_vectors: Mapping[str, str | os.PathLike]) -> None:
    for value, adapter_dir in frozen_vectors.items():
        if value in RESERVED_ADAPTERS:
            raise ValueError(f"frozen vector name {value!r} is reserved (reserved: {list(RESERVED_ADAPTERS)})")
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"frozen vector {value!r}: no adapter_config.json in {adapter_dir}")
