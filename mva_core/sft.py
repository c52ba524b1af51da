"""Supervised fine-tuning of the base model on chosen replies (the policy base and DPO reference).

TRL's ``SFTTrainer`` trains a LoRA on prompt/completion conversations (loss on the completion only); the LoRA is
merged back so the result is a plain safetensors model directory, like the base model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from mva_core.lora import LoraSettings
from mva_core.precision import Precision
from mva_core.training.harness import TrainingJob


@dataclass(frozen=True)
class SFTSettings:
    """Knobs of the SFT stage (LoRA merged back into the weights). ``gradient_checkpointing`` defaults to on, as TRL's
    ``SFTConfig`` does."""

    TRAINER_FIELDS: ClassVar[tuple[str, ...]] = (
        "learning_rate", "epochs", "batch_size", "grad_accum", "save_steps", "seed", "gradient_checkpointing",
    )

    learning_rate: float = 1e-4
    epochs: float = 1
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    save_steps: int = 50
    seed: int = 42
    gradient_checkpointing: bool = True


def sft_rows(pairs: pd.DataFrame) -> Dataset:
    """Prompt/completion conversations from preference pairs: the chosen reply is the target."""
    return Dataset.from_dict(
        {
            "prompt": [list(p) for p in pairs["prompt"]],
            "completion": [[{"role": "assistant", "content": c}] for c in pairs["chosen"]],
        }
    )


def run_sft(
    base_model_dir: str | Path,
    pairs: pd.DataFrame,
    output_dir: str | Path,
    settings: SFTSettings,
    checkpoint_dir: str | Path,
    threads: int | None = None,
    precision: Precision | None = None,
    tracking: str = "none",
    tracking_dir: str | Path | None = None,
) -> Path:
    """Fine-tune ``base_model_dir`` on ``pairs``' chosen replies and write the merged model to ``output_dir``
    (with ``training_log.parquet`` and ``metadata.json``, atomically; checkpoints and resume as in
    ``mva_core.training.harness``; ``tracking`` files go to ``tracking_dir``, which is kept).

    Weights stay fp32 (the LoRA is merged into them); ``precision`` (default fp32) sets the device and bf16 autocast.
    """
    job = TrainingJob(
        stage="sft", label="SFT", start_model_dir=base_model_dir, pair_ids=pairs["pair_id"].astype(str).tolist(),
        settings={"sft": settings}, checkpoint_dir=checkpoint_dir, precision=precision, tracking=tracking,
        tracking_dir=tracking_dir, threads=threads,
    )
    with job:
        tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, **job.precision.model_kwargs(torch.float32))
        lora = LoraSettings(settings.lora_r, settings.lora_alpha, settings.lora_dropout, tuple(settings.target_modules))
        lora.check_fits(model, key="sft.lora_r")
        peft_config = lora.peft_config()
        trainer = SFTTrainer(
            model=model, args=job.arguments(SFTConfig, settings, max_length=settings.max_length),
            train_dataset=sft_rows(pairs), processing_class=tokenizer, peft_config=peft_config,
            callbacks=job.callbacks(),
        )
        job.train(trainer)
        merged = trainer.model.merge_and_unload()

        def write_model(folder: Path) -> None:
            merged.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)

        return job.save(output_dir, write_model)
