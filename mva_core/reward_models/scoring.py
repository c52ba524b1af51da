"""Loading a reward model (or an oracle) and scoring with it: pairwise accuracy on held-out pairs, and one reward
per generation, batched with fixed settings that ``RewardScorer.describe`` records next to the scores."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from mva_core.artifacts import config_hash
from mva_core.contracts import EVALUATION_PROMPTS, GENERATIONS, validate_table
from mva_core.oracles import OracleScorer
from mva_core.progress import LineProgress
from mva_core.reward_models.inputs import (
    Messages,
    encode_rm_inputs,
    ensure_pad_token,
    load_tokenizer,
    pair_lists,
    prompt_messages,
)
from mva_core.reward_models.settings import DTYPES, RewardModelSettings
from mva_core.shards import run_sharded
from mva_core.statistics import accuracy_check
from mva_core.training.records import read_metadata


def _check_trained_format(model_dir: Path, settings: RewardModelSettings) -> None:
    """A model trained here must be scored with the input format it was trained on."""
    metadata = read_metadata(model_dir)
    if metadata is None:
        return
    trained = metadata["settings"].get("reward_model", {}).get("input_format")
    if trained is not None and trained != settings.input_format:
        raise ValueError(
            f"{model_dir} was trained with input_format={trained!r} but is being scored with "
            f"input_format={settings.input_format!r}"
        )


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
        tokenizer = load_tokenizer(name, settings.trust_remote_code, settings.revision)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, use_safetensors=True, dtype=DTYPES[settings.dtype], trust_remote_code=settings.trust_remote_code,
            revision=settings.revision,
        )
        ensure_pad_token(tokenizer, model, name)
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
    prompts, chosen, rejected = pair_lists(pairs)
    rewards = scorer.score(prompts + prompts, chosen + rejected)
    ids = pairs["pair_id"].astype(str).tolist()
    _check_finite_rewards(rewards, [f"pair_id={i} (chosen)" for i in ids] + [f"pair_id={i} (rejected)" for i in ids], scorer)
    margin = rewards[: len(chosen)] - rewards[len(chosen) :]
    return {**accuracy_check(int(np.sum(margin > 0)), len(margin)), "mean_margin": float(np.mean(margin))}


def score_generations(
    scorer: RewardScorer, generations: pd.DataFrame, prompts: pd.DataFrame, value: str,
    shard_dir: str | Path | None = None, shard_size: int = 4096,
) -> pd.DataFrame:
    """One reward per generation: columns point_id, prompt_id, [method,] [sample,] value, reward (generation order;
    several samples of a prompt are scored one by one, and ``mva_core.rewards`` averages them within the prompt).

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
    messages = [prompt_messages(by_id[pid], f"prompt_id={pid!r}") for pid in generations["prompt_id"]]
    responses = generations["response"].astype(str).tolist()
    row_ids = [f"point_id={p}, prompt_id={q}" for p, q in zip(generations["point_id"], generations["prompt_id"])]

    progress = LineProgress(len(generations), f"score {value}")

    def score_rows(start: int, stop: int) -> pd.DataFrame:
        rewards = scorer.score(messages[start:stop], responses[start:stop])
        _check_finite_rewards(rewards, row_ids[start:stop], scorer)
        progress.update(stop - start)
        return pd.DataFrame({"reward": rewards})

    folder = Path(shard_dir) / _scoring_fingerprint(scorer, generations, shard_size) if shard_dir else None
    rewards = run_sharded(len(generations), shard_size, folder, score_rows, ["reward"],
                          reused=progress.update)["reward"].to_numpy()
    carried = [c for c in ("method", "sample") if c in generations.columns]
    out = generations[["point_id", "prompt_id", *carried]].reset_index(drop=True)
    return out.assign(value=value, reward=rewards)


def _scoring_fingerprint(scorer: RewardScorer, generations: pd.DataFrame, shard_size: int) -> str:
    from mva_core.provenance import path_digest

    weights = path_digest(scorer.name) if Path(scorer.name).is_dir() else scorer.name
    rows = generations[["point_id", "prompt_id", "response"]].astype(str).to_numpy().tolist()
    return config_hash({"scorer": scorer.describe(), "weights": weights, "rows": rows, "shard_size": shard_size})
