"""The authors' λ-grid evaluation protocol, re-implemented (our code) as the baseline of ``grid_eval.py``.

What HeFei-X/MVA ``mva.py`` does (anchors.md §0): for every grid point and for every value (reward model) it

1. loads the SFT/base policy from disk,
2. merges the value vectors into it with their λ scaling — per value, the adapter's ``lora_alpha`` is multiplied by
   λ (linear in ΔW = (alpha/r)·B·A), the adapter is loaded with PEFT and ``merge_and_unload()``-ed, then the next
   value's adapter is attached and merged the same way,
3. generates greedily one prompt at a time (batch 1, no padding),
4. loads that value's reward model from disk and scores one (prompt, response) at a time.

Two deliberate differences from the released code, so both paths compute the same thing and outputs can be
compared: the reward-model input is the pipeline's (``mva_core.reward_models.encode_rm_inputs``, prompt once;
the released code feeds ``prompt + decode(full_output)``, i.e. the prompt twice), and prompts are rendered with the
pipeline's chat template (``mva_core.generation.encode_prompts``). Neither changes the protocol's cost structure.
Used only by the benchmarks; the pipeline never runs this.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from mva_core.combine import merge_explicit
from mva_core.generation import LAMBDA_PREFIX, encode_prompts
from mva_core.reward_models import RewardModelSettings, encode_rm_inputs

MERGES = ("peft", "explicit")


def load_merged_policy(sft_dir: str | Path, adapters: Mapping[str, str | Path], lams: Mapping[str, float],
                       merge: str = "peft", dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.nn.Module:
    """A fresh copy of the SFT model from disk with Σ_v λ_v ΔW_v merged into its weights."""
    model = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    if merge == "explicit":
        model = merge_explicit(model, adapters, dict(lams))
    elif merge == "peft":
        from peft import LoraConfig, PeftModel

        for value, folder in adapters.items():
            config = LoraConfig.from_pretrained(str(folder))
            config.lora_alpha = config.lora_alpha * float(lams[value])  # the authors' λ scaling
            config.inference_mode = True
            model = PeftModel.from_pretrained(model, str(folder), config=config).merge_and_unload()
            if hasattr(model, "peft_config"):  # a plain model again, so the next value attaches cleanly
                del model.peft_config
    else:
        raise ValueError(f"merge={merge!r}: expected one of {MERGES}")
    return model.to(device).eval()


@torch.inference_mode()
def generate_one(model: torch.nn.Module, ids: list[int], max_new_tokens: int, eos_ids: list[int],
                 pad_id: int) -> list[int]:
    """Greedy new-token ids for one unpadded prompt (cut at the first EOS, which is dropped)."""
    device = model.get_input_embeddings().weight.device
    input_ids = torch.tensor([ids], device=device)
    output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                            max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_ids, use_cache=True)
    tokens = output[0, len(ids):].tolist()
    stops = [i for i, token in enumerate(tokens) if token in eos_ids]
    return tokens[: stops[0]] if stops else tokens


@torch.inference_mode()
def score_one(model: torch.nn.Module, ids: list[int]) -> float:
    device = next(model.parameters()).device
    return float(model(input_ids=torch.tensor([ids], device=device)).logits[0, 0].float())


def evaluate_reference(
    sft_dir: str | Path,
    adapters: Mapping[str, str | Path],
    reward_models: Mapping[str, str | Path],
    rm_settings: RewardModelSettings,
    prompts: pd.DataFrame,
    points: pd.DataFrame,
    max_new_tokens: int,
    merge: str = "peft",
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the protocol over every (grid point, value).

    Returns (generations: point_id, value, prompt_id, response, n_response_tokens, finished;
    scores: point_id, prompt_id, value, reward). ``timer(phase)``, when given, wraps each phase (a context manager
    factory such as ``benchmarks._common.Stopwatch()``); phases: load_and_merge_policy, generate,
    load_reward_model, score.
    """
    timer = timer or (lambda phase: contextlib.nullcontext())
    values = list(adapters)
    if set(reward_models) != set(values):
        raise ValueError(f"reward models {sorted(reward_models)} do not match values {sorted(values)}")
    messages = [[dict(m) for m in p] for p in prompts["prompt"]]
    generations, scores = [], []
    for point in points.itertuples(index=False):
        lams = {v: float(getattr(point, LAMBDA_PREFIX + v)) for v in values}
        for value in values:
            with timer("load_and_merge_policy"):
                tokenizer = AutoTokenizer.from_pretrained(sft_dir)
                model = load_merged_policy(sft_dir, adapters, lams, merge=merge, dtype=dtype, device=device)
            with timer("generate"):
                responses = _generate_all(model, tokenizer, prompts, max_new_tokens)
            del model
            for prompt_id, (text, n_tokens) in zip(prompts["prompt_id"], responses):
                generations.append({"point_id": point.point_id, "value": value, "prompt_id": prompt_id,
                                    "response": text, "n_response_tokens": n_tokens,
                                    "finished": n_tokens < max_new_tokens})
            with timer("load_reward_model"):
                rm_tokenizer = AutoTokenizer.from_pretrained(reward_models[value], truncation_side="left")
                rm = AutoModelForSequenceClassification.from_pretrained(
                    reward_models[value], dtype=torch.float32, use_safetensors=True).to(device).eval()
            with timer("score"):
                for prompt_id, prompt, (response, _) in zip(prompts["prompt_id"], messages, responses):
                    ids = encode_rm_inputs(rm_tokenizer, [prompt], [response], rm_settings.input_format,
                                           rm_settings.max_length)[0]
                    scores.append({"point_id": point.point_id, "prompt_id": prompt_id, "value": value,
                                   "reward": score_one(rm, ids)})
            del rm
    return pd.DataFrame(generations), pd.DataFrame(scores)


def _generate_all(model: torch.nn.Module, tokenizer, prompts: pd.DataFrame, max_new_tokens: int) -> list[tuple[str, int]]:
    """(response text, new-token count) per prompt, one prompt at a time."""
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    responses = []
    for ids in encode_prompts(tokenizer, prompts):
        tokens = generate_one(model, ids, max_new_tokens, eos_ids, pad_id)
        responses.append((tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens)))
    return responses
