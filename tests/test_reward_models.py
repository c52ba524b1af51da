"""Reward models: input formats, training on a learnable synthetic task, reload, batch/order-invariant scoring."""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import MARKER, WORDS, synthetic_pairs
from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

from mva_core.reward_models import (
    RewardModelSettings,
    RewardScorer,
    format_rm_inputs,
    hh_transcript,
    pairwise_accuracy,
    score_generations,
    train_reward_model,
)
from mva_core.tiny import build_tiny_llama, build_tiny_tokenizer

TWO_TURNS = [
    {"role": "user", "content": "First question?"},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question?"},
]
FAST = {"epochs": 4, "learning_rate": 3e-3, "train_batch_size": 8, "lora_r": 16}


def parquet_roundtrip(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """As the pipeline reads pairs: prompt cells come back as Arrow-decoded arrays."""
    df.to_parquet(path, index=False)
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(WORDS + [MARKER, "First question? First answer. Second question?"])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("base")
    build_tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_dir) -> tuple[Path, RewardModelSettings]:
    tmp = tmp_path_factory.mktemp("rm")
    settings = RewardModelSettings(**FAST)
    pairs = parquet_roundtrip(synthetic_pairs(64, seed=0), tmp / "pairs.parquet")
    return train_reward_model(base_dir, pairs, tmp / "rm", settings, threads=1), settings


@pytest.fixture(scope="module")
def scorer(trained) -> RewardScorer:
    return RewardScorer.load(*trained)


def varied_inputs(n: int, seed: int = 1) -> tuple[list, list[str]]:
    pairs = synthetic_pairs(n, seed)
    responses = [c if i % 2 else r for i, (c, r) in enumerate(zip(pairs["chosen"], pairs["rejected"]))]
    return [list(p) for p in pairs["prompt"]], responses


# ----------------------------------------------------------------------------------------------------- formats


def test_chat_template_format_has_prompt_once_and_response_last(tokenizer):
    (text,) = format_rm_inputs(tokenizer, [TWO_TURNS], ["The reply."], "chat_template")
    assert text.count("First question?") == 1 and text.count("Second question?") == 1
    assert text.index("Second question?") < text.index("The reply.")
    assert text.endswith("<|im_start|>assistant\nThe reply.<|im_end|>\n")


def test_hh_transcript_format(tokenizer):
    (text,) = format_rm_inputs(tokenizer, [TWO_TURNS], ["The reply."], "hh_transcript")
    assert text == (
        "\n\nHuman: First question?\n\nAssistant: First answer.\n\nHuman: Second question?\n\nAssistant: The reply."
    )


def test_text_pair_format_splits_question_and_response(tokenizer):
    (pair,) = format_rm_inputs(tokenizer, [TWO_TURNS], ["The reply."], "text_pair")
    assert pair == (hh_transcript(TWO_TURNS) + "\n\nAssistant:", "The reply.")
    assert pair[0].count("Second question?") == 1 and "The reply." not in pair[0]


def test_hh_transcript_rejects_unknown_role():
    with pytest.raises(ValueError, match="'system'"):
        hh_transcript([{"role": "system", "content": "Be nice."}])


def test_settings_errors_name_the_key():
    with pytest.raises(ValueError, match="input_format='xml'"):
        RewardModelSettings(input_format="xml")
    with pytest.raises(ValueError, match="batch_size"):
        RewardModelSettings(batch_size=0)


# ----------------------------------------------------------------------------------------------------- training


def test_trained_model_beats_chance_on_held_out_pairs(scorer):
    result = pairwise_accuracy(scorer, synthetic_pairs(64, seed=1))
    assert result["n"] == 64
    assert result["accuracy"] >= 0.8 and result["mean_margin"] > 0
    assert result["ci_low"] < result["accuracy"] <= result["ci_high"] and result["check"] == "better than chance"


@pytest.mark.parametrize("input_format", ["hh_transcript", "text_pair"])
def test_other_formats_train_too(tmp_path, base_dir, input_format):
    settings = RewardModelSettings(input_format=input_format, **FAST)
    out = train_reward_model(base_dir, synthetic_pairs(64, seed=0), tmp_path / "rm", settings, threads=1)
    assert pairwise_accuracy(RewardScorer.load(out, settings), synthetic_pairs(64, seed=1))["accuracy"] >= 0.8


def test_saved_dir_is_a_plain_sequence_classifier(trained):
    out, settings = trained
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "training_log.parquet", "metadata.json"} <= names
    assert not list(out.glob("adapter_*"))
    loaded = AutoModelForSequenceClassification.from_pretrained(out, use_safetensors=True, output_loading_info=True)
    model, info = loaded
    assert isinstance(model, LlamaForSequenceClassification)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    log = pd.read_parquet(out / "training_log.parquet")
    assert log["loss"].notna().sum() == 32  # 64 pairs / 8 per step * 4 epochs
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["n_pairs"] == 64 and meta["settings"] == {"reward_model": asdict(settings)}
    assert meta["stage"] == "reward_model" and meta["global_steps"] == 32 and meta["train_metrics"]["train_loss"] > 0


def test_killed_training_resumes_from_its_checkpoint(tmp_path, base_dir, monkeypatch):
    from mva_core.training.harness import TrainingJob

    settings = RewardModelSettings(lora_r=None, epochs=1, save_steps=3, input_format="hh_transcript")
    pairs, ckpt = synthetic_pairs(32, seed=0), tmp_path / "ckpt"
    real_save = TrainingJob.save

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the model was written")

    monkeypatch.setattr(TrainingJob, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(base_dir, pairs, tmp_path / "rm", settings, checkpoint_dir=ckpt, threads=1)
    assert (ckpt / "checkpoint-3").is_dir() and not (tmp_path / "rm").exists()
    monkeypatch.setattr(TrainingJob, "save", real_save)
    again = train_reward_model(base_dir, pairs, tmp_path / "rm", settings, checkpoint_dir=ckpt, threads=1)
    assert json.loads((again / "metadata.json").read_text())["resumed_from"].endswith("checkpoint-4")
    assert not ckpt.exists()  # checkpoints are removed once the model is written
    other = replace(settings, learning_rate=1e-3)  # a different run never resumes from these checkpoints
    monkeypatch.setattr(TrainingJob, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(base_dir, pairs, tmp_path / "rm2", settings, checkpoint_dir=ckpt, threads=1)
    monkeypatch.setattr(TrainingJob, "save", real_save)
    fresh = train_reward_model(base_dir, pairs, tmp_path / "rm2", other, checkpoint_dir=ckpt, threads=1)
    assert json.loads((fresh / "metadata.json").read_text())["resumed_from"] is None


def test_scoring_with_another_format_than_trained_is_refused(trained):
    out, _ = trained
    with pytest.raises(ValueError, match="input_format='chat_template'"):
        RewardScorer.load(out, RewardModelSettings(input_format="hh_transcript"))


def test_bad_pairs_fail_before_training(tmp_path, base_dir):
    with pytest.raises(ValueError, match=r"lacks columns \['rejected'\]"):
        pairs = synthetic_pairs(4, 0).drop(columns="rejected")
        train_reward_model(base_dir, pairs, tmp_path / "rm", RewardModelSettings())


# ----------------------------------------------------------------------------------------------------- scoring


def test_scores_do_not_depend_on_batch_size_or_order(trained):
    out, settings = trained
    prompts, responses = varied_inputs(19)
    one = RewardScorer.load(out, replace(settings, batch_size=1))
    eight = RewardScorer.load(out, replace(settings, batch_size=8))
    reference = one.score(prompts, responses)
    np.testing.assert_allclose(eight.score(prompts, responses), reference, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(prompts))
    shuffled = eight.score([prompts[i] for i in perm], [responses[i] for i in perm])
    np.testing.assert_allclose(shuffled, reference[perm], atol=1e-5)
    assert eight.describe() == {
        "model": str(out), "input_format": "chat_template", "dtype": "float32", "batch_size": 8, "max_length": 512
    }


@pytest.mark.parametrize("pad", ["eos", "none"])
def test_pad_equal_to_eos_or_missing(tmp_path, tokenizer, pad):
    """A tokenizer padding with eos (or with no pad token) still scores each sequence at its own last token."""
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token if pad == "eos" else None
    config = build_tiny_llama(tok).config
    config.num_labels, config.pad_token_id = 1, tok.pad_token_id
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    scorer = RewardScorer.load(tmp_path, RewardModelSettings(batch_size=8))
    assert scorer.model.config.pad_token_id == scorer.tokenizer.pad_token_id == tok.eos_token_id
    prompts, responses = varied_inputs(11)
    batched = scorer.score(prompts, responses)
    single = RewardScorer(scorer.model, scorer.tokenizer, RewardModelSettings(batch_size=1), str(tmp_path))
    np.testing.assert_allclose(batched, single.score(prompts, responses), atol=1e-5)
    (text,) = format_rm_inputs(tok, prompts[:1], responses[:1], "chat_template")
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():  # unpadded forward, reward read at the very last token
        last = scorer.model.score(scorer.model.model(ids).last_hidden_state)[0, -1, 0].item()
    assert batched[0] == pytest.approx(last, abs=1e-5)


def test_score_generations_shape_and_columns(scorer):
    pairs = synthetic_pairs(3, seed=2)
    prompts = pd.DataFrame({"prompt_id": ["a", "b", "c"], "prompt": pairs["prompt"]})
    generations = pd.DataFrame({
        "point_id": ["p0", "p0", "p0", "p1", "p1", "p1"],
        "prompt_id": ["a", "b", "c", "c", "b", "a"],
        "method": ["mva"] * 6,
        "response": list(pairs["chosen"]) + list(pairs["rejected"]),
        "seed": range(6),
    })
    scores = score_generations(scorer, generations, prompts, value="helpful")
    assert list(scores.columns) == ["point_id", "prompt_id", "method", "value", "reward"]
    assert len(scores) == 6 and (scores["value"] == "helpful").all()
    expected = scorer.score([list(prompts.set_index("prompt_id").loc[p, "prompt"]) for p in generations["prompt_id"]],
                            generations["response"].tolist())
    np.testing.assert_allclose(scores["reward"], expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"missing from prompts: \['zz'\]"):
        score_generations(scorer, generations.assign(prompt_id="zz"), prompts, value="helpful")


def test_scoring_resumes_from_finished_shards(scorer, tmp_path, monkeypatch):
    pairs = synthetic_pairs(5, seed=3)
    prompts = pd.DataFrame({"prompt_id": list("abcde"), "prompt": pairs["prompt"]})
    generations = pd.DataFrame({"point_id": ["p0"] * 5, "prompt_id": list("abcde"), "response": pairs["chosen"]})
    whole = score_generations(scorer, generations, prompts, "helpful")
    real_score, calls, kill_at = RewardScorer.score, [], [3]

    def dies_on_third_shard(self, prompts, responses):
        calls.append(len(responses))
        if len(calls) in kill_at:
            kill_at.clear()
            raise KeyboardInterrupt("killed")
        return real_score(self, prompts, responses)

    monkeypatch.setattr(RewardScorer, "score", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        score_generations(scorer, generations, prompts, "helpful", shard_dir=tmp_path, shard_size=2)
    calls.clear()
    resumed = score_generations(scorer, generations, prompts, "helpful", shard_dir=tmp_path, shard_size=2)
    assert calls == [1]  # only the unfinished last shard (row 5) is scored again
    pd.testing.assert_frame_equal(resumed, whole, atol=1e-6)
    other = score_generations(scorer, generations.assign(response="changed"), prompts, "helpful", shard_dir=tmp_path,
                              shard_size=2)
    assert calls == [1, 2, 2, 1]  # other rows: a fresh fingerprint, nothing reused
    assert not np.allclose(other["reward"], whole["reward"])
