"""Training a value's scalar reward model on its preference pairs (TRL ``RewardTrainer``, LoRA or full fine-tune)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from mva_core.precision import fixed_precision
from mva_core.reward_models.inputs import encode_rm_inputs, load_tokenizer, pair_lists
from mva_core.reward_models.settings import RewardModelSettings

if TYPE_CHECKING:  # trl, peft and datasets are imported only by training: scoring jobs start faster without them
    from datasets import Dataset
    from peft import LoraConfig


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
    tracking_dir: str | Path | None = None,
) -> Path:
    """Train a scalar reward model on ``pairs`` and save it as a plain sequence-classification model dir.

    ``output_dir`` receives safetensors weights (LoRA merged), tokenizer, ``training_log.parquet`` and
    ``metadata.json``, atomically. With ``checkpoint_dir`` the trainer checkpoints every ``save_steps`` steps there
    and resumes from the latest checkpoint of the same run (inputs and settings); it is removed after success.
    ``tracking`` files go to ``tracking_dir``, which is kept.
    ``settings.dtype`` sets the mixed precision (fp32 master weights).
    """
    from trl import RewardConfig

    from mva_core.reward_trainer import CheckedRewardTrainer
    from mva_core.training.harness import TrainingJob

    tokenizer = load_tokenizer(str(base_model_dir), settings.trust_remote_code)
    dataset = _preference_dataset(tokenizer, pairs, settings)  # validates the pairs before anything expensive
    job = TrainingJob(
        stage="reward_model", label="reward model", start_model_dir=base_model_dir,
        pair_ids=pairs["pair_id"].astype(str).tolist(), settings={"reward_model": settings},
        checkpoint_dir=checkpoint_dir, precision=fixed_precision(settings.dtype, f"reward_model.dtype: {settings.dtype}"),
        tracking=tracking, tracking_dir=tracking_dir, threads=threads,
    )
    with job:
        model = _load_backbone(Path(base_model_dir), tokenizer, settings)
        trainer = CheckedRewardTrainer(
            model=model,
            args=job.arguments(RewardConfig, settings, max_length=None),  # inputs arrive truncated by encode_rm_inputs
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=_lora_config(model, settings),
            callbacks=job.callbacks(),
        )
        job.train(trainer)
        trained = trainer.model.merge_and_unload() if settings.lora_r is not None else trainer.model

        def write_model(folder: Path) -> None:
            trained.config.pad_token_id = tokenizer.pad_token_id
            trained.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        return job.save(output_dir, write_model)
