"""Training a value's scalar reward model on its preference pairs (TRL ``RewardTrainer``, LoRA or full fine-tune)."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from mva_core.artifacts import atomic_directory, library_versions, write_json, write_parquet
from mva_core.progress import ProgressLog
from mva_core.reward_models.inputs import encode_rm_inputs, load_tokenizer, pair_lists
from mva_core.reward_models.settings import RewardModelSettings
from mva_core.runtime import resume_point, tracking_kwargs

if TYPE_CHECKING:  # trl, peft and datasets are imported only by training: scoring jobs start faster without them
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig


def _attention_linear_names(model: torch.nn.Module) -> list[str]:
    """Full names of the linear projections inside attention blocks (Llama q/k/v/o_proj, GPT-2 c_attn/c_proj, ...)."""
    from transformers.pytorch_utils import Conv1D

    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and any(k in name for k in ("attn", "attention"))
    ]
    if not names:
        raise ValueError(f"{type(model).__name__}: no attention projections found for LoRA; use lora_r=None")
    return names


def _lora_config(model: torch.nn.Module, settings: RewardModelSettings) -> LoraConfig | None:
    """LoRA on the attention projections with the reward head trained in full, or None for a full fine-tune."""
    if settings.lora_r is None:
        return None
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.lora_r,
        lora_alpha=2 * settings.lora_r,
        lora_dropout=0.0,
        target_modules=_attention_linear_names(model),
        modules_to_save=["score"],
    )


def _preference_dataset(
    tokenizer: PreTrainedTokenizerBase, pairs: pd.DataFrame, settings: RewardModelSettings
) -> Dataset:
    """Pre-tokenised ``chosen_ids``/``rejected_ids`` rows (TRL then skips its own formatting, which would differ)."""
    from datasets import Dataset

    prompts, chosen, rejected = pair_lists(pairs)
    fmt, max_length = settings.input_format, settings.max_length
    return Dataset.from_dict({
        "pair_id": pairs["pair_id"].astype(str).tolist(),
        "chosen_ids": encode_rm_inputs(tokenizer, prompts, chosen, fmt, max_length),
        "rejected_ids": encode_rm_inputs(tokenizer, prompts, rejected, fmt, max_length),
    })


def _reward_config(settings: RewardModelSettings, output_dir: Path, checkpointing: bool,
                   tracking: str = "none") -> RewardConfig:
    from trl import RewardConfig

    return RewardConfig(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.train_batch_size,
        seed=settings.seed,
        max_length=None,  # inputs arrive truncated by encode_rm_inputs
        activation_checkpointing=settings.gradient_checkpointing,
        bf16=settings.dtype == "bfloat16",
        fp16=settings.dtype == "float16",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="steps" if checkpointing else "no",
        save_steps=settings.save_steps,
        save_total_limit=2,
        **tracking_kwargs(tracking, output_dir),
        disable_tqdm=True,
    )


def _load_backbone(
    base_model_dir: Path, tokenizer: PreTrainedTokenizerBase, settings: RewardModelSettings
) -> PreTrainedModel:
    """The causal-LM backbone with a fresh scalar head (fp32 master weights; ``dtype`` sets mixed precision)."""
    from transformers import set_seed

    set_seed(settings.seed)  # the new head is randomly initialised
    layers = {"num_hidden_layers": settings.backbone_layers} if settings.backbone_layers else {}
    return AutoModelForSequenceClassification.from_pretrained(
        base_model_dir,
        **layers,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        dtype=torch.float32,
        use_safetensors=True,
        trust_remote_code=settings.trust_remote_code,
    )


def train_reward_model(
    base_model_dir: str | Path,
    pairs: pd.DataFrame,
    output_dir: str | Path,
    settings: RewardModelSettings,
    checkpoint_dir: str | Path | None = None,
    threads: int | None = None,
    tracking: str = "none",
) -> Path:
    """Train a scalar reward model on ``pairs`` and save it as a plain sequence-classification model dir.

    ``output_dir`` receives safetensors weights (LoRA merged), tokenizer, ``training_log.parquet`` and
    ``metadata.json``, atomically. With ``checkpoint_dir`` the trainer checkpoints every ``save_steps`` steps there
    and resumes from the latest checkpoint of the same run (inputs and settings); it is removed after success.
    """
    from mva_core.reward_trainer import CheckedRewardTrainer

    base_model_dir, output_dir = Path(base_model_dir), Path(output_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if threads is not None:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(str(base_model_dir), settings.trust_remote_code)
    dataset = _preference_dataset(tokenizer, pairs, settings)
    model = _load_backbone(base_model_dir, tokenizer, settings)
    run = {"base_model_dir": str(base_model_dir), "pair_ids": pairs["pair_id"].astype(str).tolist(),
           "settings": asdict(settings)}
    resume = resume_point(checkpoint_dir, run) if checkpoint_dir is not None else None
    with tempfile.TemporaryDirectory(prefix="rm_trainer_") as scratch:
        trainer = CheckedRewardTrainer(
            model=model,
            args=_reward_config(settings, checkpoint_dir or Path(scratch), checkpoint_dir is not None, tracking),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=_lora_config(model, settings),
            callbacks=[ProgressLog("reward model")],
        )
        result = trainer.train(resume_from_checkpoint=resume)
    trained = trainer.model.merge_and_unload() if settings.lora_r is not None else trainer.model
    metadata = {
        "settings": asdict(settings),
        "base_model_dir": str(base_model_dir),
        "n_pairs": len(pairs),
        "resumed_from": resume,
        "train_metrics": result.metrics,
        "library_versions": library_versions(),
    }
    _save_reward_model(trained, tokenizer, pd.DataFrame(trainer.state.log_history), metadata, output_dir)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return output_dir


def _save_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    log: pd.DataFrame,
    metadata: dict[str, Any],
    output_dir: Path,
) -> None:
    with atomic_directory(output_dir) as tmp:
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_parquet(log, tmp / "training_log.parquet")
        write_json(metadata, tmp / "metadata.json")
