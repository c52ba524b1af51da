"""Reward models: train one per value (TRL ``RewardTrainer``) or load a published one, and score generations.

One encoding function (:func:`encode_rm_inputs`) turns (prompt messages, response) into token ids for both training
and scoring, so a trained reward model is always scored on exactly the inputs it was trained on. The prompt appears
once in every input (the released MVA code fed it twice). Scoring is batched with a fixed batch size and dtype, right
padded with ``pad_token_id`` set (sequence-classification heads read the last non-pad token, so this also holds when
pad == eos), and sorted by length; :meth:`RewardScorer.describe` records those settings next to the scores, since
reward-model scores move with batch size and dtype (anchors.md §3.3).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mva_core.artifacts import atomic_directory, config_hash, library_versions, write_json, write_parquet
from mva_core.contracts import EVALUATION_PROMPTS, GENERATIONS, TRAINING_PAIRS, validate_table
from mva_core.oracles import OracleScorer
from mva_core.progress import LineProgress, ProgressLog
from mva_core.runtime import resume_point, tracking_kwargs
from mva_core.shards import run_sharded
from mva_core.statistics import accuracy_check

if TYPE_CHECKING:  # trl, peft and datasets are imported only by training: scoring jobs start faster without them
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig

INPUT_FORMATS = ("chat_template", "hh_transcript", "text_pair")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HH_ROLES = {"user": "Human", "assistant": "Assistant"}

Messages = list[dict[str, str]]
RMInputs = list[str] | list[tuple[str, str]]


@dataclass(frozen=True)
class RewardModelSettings:
    """How a value's reward model is obtained, fed and run.

    ``source``: "train" (train one on the value's reward-model split) or a Hugging Face model id / local directory of
    a sequence-classification model (e.g. ``Ray2333/gpt2-large-helpful-reward_model``, fed as "text_pair").
    ``input_format``: "chat_template" (the tokenizer's chat template over prompt + response as assistant message),
    "hh_transcript" ("\\n\\nHuman: ...\\n\\nAssistant: ..." text) or "text_pair" (tokenizer(question, response) with
    the question ending in "\\n\\nAssistant:", as RiC feeds the Ray2333 GPT-2 HH reward models).
    ``lora_r``: LoRA rank on the attention projections (score head fully trained); None = full fine-tune.
    """

    source: str = "train"
    input_format: str = "chat_template"
    batch_size: int = 16
    dtype: str = "float32"
    max_length: int = 512
    trust_remote_code: bool = False
    learning_rate: float = 5e-5
    epochs: int = 1
    train_batch_size: int = 8
    lora_r: int | None = 16
    seed: int = 42
    backbone_layers: int | None = None
    gradient_checkpointing: bool = False
    save_steps: int = 500
    scorer: str | None = None

    def __post_init__(self) -> None:
        if (self.source == "oracle") != (self.scorer is not None):
            raise ValueError(f"reward_model.scorer={self.scorer!r} goes with source 'oracle' (source={self.source!r})")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"reward_model.input_format={self.input_format!r}: expected one of {INPUT_FORMATS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"reward_model.dtype={self.dtype!r}: expected one of {tuple(DTYPES)}")
        for key in ("batch_size", "max_length", "epochs", "train_batch_size", "save_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"reward_model.{key}={getattr(self, key)!r}: must be >= 1")
        if self.lora_r is not None and self.lora_r < 1:
            raise ValueError(f"reward_model.lora_r={self.lora_r!r}: must be >= 1 or None (full fine-tune)")
        if not self.source:
            raise ValueError("reward_model.source is empty: use 'train' or a model id / directory")


# ----------------------------------------------------------------------------------------------------- input format


def hh_transcript(messages: Sequence[Mapping[str, str]]) -> str:
    """Anthropic HH text of a dialogue: "\\n\\nHuman: ...\\n\\nAssistant: ..." (user/assistant roles only)."""
    parts = []
    for i, message in enumerate(messages):
        role = message["role"]
        if role not in HH_ROLES:
            raise ValueError(f"message {i} has role {role!r}: the HH transcript format knows only {tuple(HH_ROLES)}")
        parts.append(f"\n\n{HH_ROLES[role]}: {message['content']}")
    return "".join(parts)


def format_rm_inputs(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Messages], responses: list[str], input_format: str
) -> RMInputs:
    """Reward-model inputs for (prompt, response) pairs; each prompt appears exactly once, the response last."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if input_format == "chat_template":
        if tokenizer.chat_template is None:
            name = tokenizer.name_or_path
            raise ValueError(f"input_format='chat_template' but tokenizer {name!r} has no chat template")
        return [
            tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
            for prompt, response in zip(prompts, responses)
        ]
    if input_format == "hh_transcript":
        return [hh_transcript([*prompt, {"role": "assistant", "content": r}]) for prompt, r in zip(prompts, responses)]
    if input_format == "text_pair":
        return [(hh_transcript(prompt) + "\n\nAssistant:", response) for prompt, response in zip(prompts, responses)]
    raise ValueError(f"input_format={input_format!r}: expected one of {INPUT_FORMATS}")


def encode_rm_inputs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    responses: list[str],
    input_format: str,
    max_length: int,
) -> list[list[int]]:
    """Token ids of the formatted inputs, cut to ``max_length`` on the tokenizer's truncation side."""
    inputs = format_rm_inputs(tokenizer, prompts, responses, input_format)
    if not inputs:
        return []
    kwargs: dict[str, Any] = {"truncation": True, "max_length": max_length}
    if input_format == "text_pair":
        questions, answers = zip(*inputs)
        return tokenizer(list(questions), list(answers), **kwargs)["input_ids"]
    # A rendered chat template already holds its special tokens.
    return tokenizer(inputs, add_special_tokens=input_format != "chat_template", **kwargs)["input_ids"]


# ----------------------------------------------------------------------------------------------------- data frames


def _messages(value: Any, where: str) -> Messages:
    """A prompt cell (list or Arrow-decoded array of {role, content}) as a list of plain dicts."""
    try:
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    except (TypeError, KeyError) as err:
        raise ValueError(f"{where}: prompt must be a list of {{role, content}} messages, got {value!r}") from err


def _pair_lists(pairs: pd.DataFrame) -> tuple[list[Messages], list[str], list[str]]:
    """Validated (prompts, chosen, rejected) lists of a preference-pair frame."""
    validate_table(pairs, TRAINING_PAIRS)
    if pairs.empty:
        raise ValueError("pairs is empty")
    prompts = [_messages(p, f"pair_id={pid!r}") for pid, p in zip(pairs["pair_id"], pairs["prompt"])]
    return prompts, pairs["chosen"].astype(str).tolist(), pairs["rejected"].astype(str).tolist()


# ----------------------------------------------------------------------------------------------------- loading


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None, name: str) -> None:
    """Use eos as pad when the tokenizer has none, and mirror the pad id into the model config."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"reward model {name!r}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _load_tokenizer(name: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token that truncates from the left, so over-long inputs keep the response end."""
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, truncation_side="left")
    _ensure_pad_token(tokenizer, None, name)
    return tokenizer


def _check_trained_format(model_dir: Path, settings: RewardModelSettings) -> None:
    """A model trained here must be scored with the input format it was trained on."""
    meta_path = model_dir / "metadata.json"
    if not meta_path.is_file():
        return
    trained = json.loads(meta_path.read_text()).get("settings", {}).get("input_format")
    if trained is not None and trained != settings.input_format:
        raise ValueError(
            f"{model_dir} was trained with input_format={trained!r} but is being scored with "
            f"input_format={settings.input_format!r}"
        )


# ----------------------------------------------------------------------------------------------------- training


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

    prompts, chosen, rejected = _pair_lists(pairs)
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
    tokenizer = _load_tokenizer(str(base_model_dir), settings.trust_remote_code)
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


# ----------------------------------------------------------------------------------------------------- scoring


def _right_pad(batch: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every sequence starting at position 0."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


@dataclass
class RewardScorer:
    """A loaded sequence-classification reward model plus the settings that fix how it is fed."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    settings: RewardModelSettings
    name: str

    @classmethod
    def load(cls, model_dir_or_id: str | Path, settings: RewardModelSettings) -> RewardScorer:
        """Load weights (safetensors only) in ``settings.dtype`` onto the GPU when there is one; with source
        ``oracle``, the oracle scorer (``mva_core.oracles.OracleScorer``, same interface, no model)."""
        if settings.source == "oracle":
            return OracleScorer(settings.scorer)
        name = str(model_dir_or_id)
        if Path(name).is_dir():
            _check_trained_format(Path(name), settings)
        tokenizer = _load_tokenizer(name, settings.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, use_safetensors=True, dtype=DTYPES[settings.dtype], trust_remote_code=settings.trust_remote_code
        )
        _ensure_pad_token(tokenizer, model, name)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model=model.to(device).eval(), tokenizer=tokenizer, settings=settings, name=name)

    def describe(self) -> dict[str, Any]:
        """Settings that determine the scores; store them next to the scores."""
        s = self.settings
        return {
            "model": self.name,
            "input_format": s.input_format,
            "dtype": s.dtype,
            "batch_size": s.batch_size,
            "max_length": s.max_length,
        }

    def score(self, prompts: list[Messages], responses: list[str]) -> np.ndarray:
        """Scalar reward per (prompt, response), in input order (batched longest first)."""
        s = self.settings
        encoded = encode_rm_inputs(self.tokenizer, prompts, responses, s.input_format, s.max_length)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        rewards = np.empty(len(encoded), dtype=np.float64)
        for start in range(0, len(order), s.batch_size):
            index = order[start : start + s.batch_size]
            rewards[index] = self._score_batch([encoded[i] for i in index])
        return rewards

    @torch.inference_mode()
    def _score_batch(self, batch: list[list[int]]) -> np.ndarray:
        input_ids, attention_mask = _right_pad(batch, self.tokenizer.pad_token_id)
        device = self.model.device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        return logits[:, 0].float().cpu().numpy()


class NonFiniteRewardError(ValueError):
    """A reward model returned NaN or inf; the message names the rows."""


def _check_finite_rewards(rewards: np.ndarray, row_ids: Sequence[Any], scorer: RewardScorer) -> None:
    bad = [row_ids[i] for i in np.flatnonzero(~np.isfinite(rewards))]
    if bad:
        raise NonFiniteRewardError(f"reward model {scorer.name} gave NaN/inf rewards for {len(bad)} rows, "
                                   f"e.g. {bad[:5]}; nothing was written")


def pairwise_accuracy(scorer: RewardScorer, pairs: pd.DataFrame) -> dict[str, float | int | str]:
    """Fraction of pairs where chosen outscores rejected, its exact binomial CI and whether it is better than
    chance (``mva_core.statistics.accuracy_check``), with the pair count and mean margin."""
    prompts, chosen, rejected = _pair_lists(pairs)
    rewards = scorer.score(prompts + prompts, chosen + rejected)
    ids = pairs["pair_id"].astype(str).tolist()
    _check_finite_rewards(rewards, [f"pair_id={i} (chosen)" for i in ids] + [f"pair_id={i} (rejected)" for i in ids], scorer)
    margin = rewards[: len(chosen)] - rewards[len(chosen) :]
    return {**accuracy_check(int(np.sum(margin > 0)), len(margin)), "mean_margin": float(np.mean(margin))}


def score_generations(
    scorer: RewardScorer, generations: pd.DataFrame, prompts: pd.DataFrame, value: str,
    shard_dir: str | Path | None = None, shard_size: int = 4096,
) -> pd.DataFrame:
    """One reward per generation: columns point_id, prompt_id, [method,] value, reward (generation order).

    With ``shard_dir`` every ``shard_size`` rows are kept as a shard (see ``mva_core.shards``) that a rerun of the
    same scoring (rows, reward model weights and settings) reuses.
    """
    validate_table(generations, GENERATIONS.only("point_id", "prompt_id", "response"))
    validate_table(prompts, EVALUATION_PROMPTS.only("prompt_id", "prompt"))
    duplicated = prompts["prompt_id"][prompts["prompt_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"prompts has duplicated prompt_id values {duplicated[:5]}")
    by_id = dict(zip(prompts["prompt_id"], prompts["prompt"]))
    unknown = sorted(set(generations["prompt_id"]) - set(by_id))
    if unknown:
        raise ValueError(f"generations refer to prompt_id values missing from prompts: {unknown[:5]}")
    messages = [_messages(by_id[pid], f"prompt_id={pid!r}") for pid in generations["prompt_id"]]
    responses = generations["response"].astype(str).tolist()
    row_ids = [f"point_id={p}, prompt_id={q}" for p, q in zip(generations["point_id"], generations["prompt_id"])]

    progress = LineProgress(len(generations), f"score {value}")

    def score_rows(start: int, stop: int) -> pd.DataFrame:
        rewards = scorer.score(messages[start:stop], responses[start:stop])
        _check_finite_rewards(rewards, row_ids[start:stop], scorer)
        progress.update(stop - start)
        return pd.DataFrame({"reward": rewards})

    folder = Path(shard_dir) / _scoring_fingerprint(scorer, generations, shard_size) if shard_dir else None
    rewards = run_sharded(len(generations), shard_size, folder, score_rows, reused=progress.update)["reward"].to_numpy()
    carried = [c for c in ("method",) if c in generations.columns]
    out = generations[["point_id", "prompt_id", *carried]].reset_index(drop=True)
    return out.assign(value=value, reward=rewards)


def _scoring_fingerprint(scorer: RewardScorer, generations: pd.DataFrame, shard_size: int) -> str:
    from mva_core.provenance import path_digest

    weights = path_digest(scorer.name) if Path(scorer.name).is_dir() else scorer.name
    rows = generations[["point_id", "prompt_id", "response"]].astype(str).to_numpy().tolist()
    return config_hash({"scorer": scorer.describe(), "weights": weights, "rows": rows, "shard_size": shard_size})
