"""Supervised fine-tuning of the base model on chosen replies (the policy base and DPO reference).

TRL's ``SFTTrainer`` trains a LoRA on prompt/completion conversations (loss on the completion only); the LoRA is
merged back so the result is a plain safetensors model directory, like the base model.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from mva_core.artifacts import atomic_directory, library_versions, write_json, write_parquet
from mva_core.precision import Precision, resolve_precision
from mva_core.progress import ProgressLog
from mva_core.runtime import resume_point, tracking_kwargs


@dataclass(frozen=True)
class SFTSettings:
    """Knobs of the SFT stage (LoRA merged back into the weights)."""

    learning_rate: float = 1e-4
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    save_steps: int = 50
    seed: int = 42


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
) -> Path:
    """Fine-tune ``base_model_dir`` on ``pairs``' chosen replies and write the merged model to ``output_dir``.

    Weights stay fp32 (the LoRA is merged into them); ``precision`` (default fp32) sets the device and bf16 autocast.
    """
    if threads:
        torch.set_num_threads(threads)
    started = time.time()
    precision = precision or resolve_precision("float32")
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, **precision.model_kwargs(torch.float32))
    args = SFTConfig(
        output_dir=str(checkpoint_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        max_length=settings.max_length,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        logging_steps=1,
        seed=settings.seed,
        **tracking_kwargs(tracking, checkpoint_dir),
        disable_tqdm=True,
        dataloader_num_workers=0,
        **precision.trainer_kwargs(),
    )
    peft_config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=sft_rows(pairs), processing_class=tokenizer, peft_config=peft_config,
        callbacks=[ProgressLog("SFT")],
    )
    run = {"base_model_dir": str(base_model_dir), "pair_ids": pairs["pair_id"].astype(str).tolist(), "settings": asdict(settings)}
    trainer.train(resume_from_checkpoint=resume_point(checkpoint_dir, run))
    merged = trainer.model.merge_and_unload()
    log = pd.DataFrame([row for row in trainer.state.log_history if "loss" in row])
    with atomic_directory(output_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_parquet(log, tmp / "training_log.parquet")
        write_json(
            {"settings": asdict(settings), "pairs": len(pairs), "wall_seconds": time.time() - started,
             "versions": library_versions()},
            tmp / "mva_metadata.json",
        )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return Path(output_dir)
