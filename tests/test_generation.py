"""generate_grid: per-row λ batches equal merged models, only new tokens, batching invariance (rows and token
budget), shard resume, out-of-memory back-off."""
from __future__ import annotations

import copy
from dataclasses import replace

import pandas as pd
import pytest
import torch

from mva_core.combine import ValueMixer, merge_explicit
from mva_core.generation import GenerationSettings, encode_prompts, generate_grid, plan_batches

QUESTIONS = ["Hi", "What is the capital of France?", "Please explain how photosynthesis works in simple words.",
             "How do I fix a flat tire?", "Mix flour"]
SETTINGS = GenerationSettings(max_new_tokens=8, batch_size=8)
BUDGETED = GenerationSettings(max_new_tokens=8, batch_size=8, max_batch_tokens=100)  # prompts of 13-20 tokens


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, tiny_llama, random_adapters):
    """The shared tiny model and value vectors (conftest), and a mixer on a copy of the model."""
    tokenizer, model, adapters = tiny_tokenizer, tiny_llama, random_adapters
    mixer = ValueMixer.attach(copy.deepcopy(model), adapters)
    prompts = pd.DataFrame({
        "prompt_id": [f"p{i}" for i in range(len(QUESTIONS))],
        "prompt": [[{"role": "user", "content": q}] for q in QUESTIONS],
    })
    points = pd.DataFrame({"point_id": [0, 1, 2, 3], "lam_care": [0.0, 1.0, -0.5, 2.0], "lam_safe": [0.0, 0.5, 1.5, -1.0]})
    return tokenizer, model, adapters, mixer, prompts, points


def reference_response(model, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    """Greedy answer of one unpadded prompt."""
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def test_mixer_grid_equals_merged_models(setup):
    tokenizer, model, adapters, mixer, prompts, points = setup
    result = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    assert list(result.columns) == ["point_id", "prompt_id", "response", "n_prompt_tokens", "n_response_tokens", "finished"]
    assert list(zip(result.point_id, result.prompt_id)) == [(pt, pr) for pt in points.point_id for pr in prompts.prompt_id]
    encoded = encode_prompts(tokenizer, prompts)
    for point in points.itertuples():
        merged = merge_explicit(model, adapters, {"care": point.lam_care, "safe": point.lam_safe})
        expected = [reference_response(merged, tokenizer, ids, SETTINGS.max_new_tokens) for ids in encoded]
        assert result[result.point_id == point.point_id].response.tolist() == expected
    assert result.groupby("point_id").response.apply(tuple).nunique() > 1, "grid points should differ"


def test_responses_hold_only_new_tokens(setup):
    tokenizer, model, _, _, prompts, points = setup
    result = generate_grid(model, tokenizer, None, prompts, points[["point_id"]].head(1), SETTINGS, progress=False)
    rendered = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts.prompt]
    assert result.n_prompt_tokens.tolist() == [len(tokenizer(t, add_special_tokens=False).input_ids) for t in rendered]
    for question, response in zip(QUESTIONS, result.response):
        assert question not in response and "user" not in response
    assert (result.n_response_tokens == SETTINGS.max_new_tokens).all() and not result.finished.any()


def test_every_token_eos_finishes_immediately(setup):
    tokenizer, model, _, _, prompts, _ = setup
    eager = copy.deepcopy(model)
    eager.generation_config.eos_token_id = list(range(len(tokenizer)))
    result = generate_grid(eager, tokenizer, None, prompts, pd.DataFrame({"point_id": ["sft"]}), SETTINGS, progress=False)
    assert result.finished.all() and (result.n_response_tokens == 0).all() and (result.response == "").all()


def test_batch_size_does_not_change_greedy_outputs(setup):
    tokenizer, _, _, mixer, prompts, points = setup
    one = generate_grid(mixer.model, tokenizer, mixer, prompts, points, GenerationSettings(max_new_tokens=8, batch_size=1), progress=False)
    eight = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    pd.testing.assert_frame_equal(one, eight)


def record_batches(monkeypatch, model) -> list[tuple[int, int]]:
    """(rows, padded prompt width) of every ``model.generate`` call from now on."""
    real_generate, shapes = model.generate, []

    def recording_generate(*, input_ids, **kwargs):
        shapes.append(tuple(input_ids.shape))
        return real_generate(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    return shapes


def test_plan_batches():
    lengths = [100, 100, 90, 50, 20, 20, 20]
    assert plan_batches(lengths, GenerationSettings(max_new_tokens=10, batch_size=4)) == [4, 3]
    # 2 × 110 ≤ 300 < 3 × 110; 3 × (90 + 10) ≤ 300 < 4 × 100; the row cap of 4 would allow more short rows
    assert plan_batches(lengths, GenerationSettings(max_new_tokens=10, batch_size=4, max_batch_tokens=300)) == [2, 3, 2]
    assert plan_batches(lengths, GenerationSettings(max_new_tokens=10, batch_size=2, max_batch_tokens=10_000)) == [2, 2, 2, 1]
    assert plan_batches([500, 10], GenerationSettings(max_new_tokens=10, batch_size=4, max_batch_tokens=300)) == [1, 1]
    with pytest.raises(ValueError, match="max_batch_tokens"):
        GenerationSettings(max_batch_tokens=0)


@pytest.mark.parametrize("budget", [20, 60, 100, 200])
def test_token_budget_does_not_change_greedy_outputs(setup, monkeypatch, budget):
    tokenizer, _, _, mixer, prompts, points = setup
    fixed = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    settings = GenerationSettings(max_new_tokens=8, batch_size=8, max_batch_tokens=budget)
    shapes = record_batches(monkeypatch, mixer.model)
    budgeted = generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False)
    pd.testing.assert_frame_equal(budgeted, fixed)
    assert sum(rows for rows, _ in shapes) == len(fixed)
    for rows, width in shapes:
        assert rows <= settings.batch_size and (rows == 1 or rows * (width + settings.max_new_tokens) <= budget)
    assert [rows for rows, _ in shapes] != [8, 8, 4]  # the budget, not only the row cap, cut them


@pytest.mark.parametrize("settings", [SETTINGS, BUDGETED], ids=["rows", "token_budget"])
def test_shards_are_reused(setup, tmp_path, settings):
    tokenizer, _, _, mixer, prompts, points = setup
    first = generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False, shard_dir=tmp_path, shard_size=6)
    shards = sorted(tmp_path.glob("*/shard-*.parquet"))
    assert len(shards) == 4  # 20 rows in shards of 6
    stamps = [p.stat().st_mtime_ns for p in shards]
    shards[-1].unlink()
    second = generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False, shard_dir=tmp_path, shard_size=6)
    assert [p.stat().st_mtime_ns for p in shards[:-1]] == stamps[:-1] and shards[-1].is_file()
    pd.testing.assert_frame_equal(first, second)


def test_token_budget_is_part_of_the_shard_fingerprint(setup, tmp_path):
    tokenizer, _, _, mixer, prompts, points = setup
    for settings in (SETTINGS, BUDGETED, GenerationSettings(max_new_tokens=8, batch_size=8, max_batch_tokens=60)):
        generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False, shard_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


def test_lambda_columns_must_match_mixer(setup):
    tokenizer, _, _, mixer, prompts, points = setup
    with pytest.raises(ValueError, match="lam_safe"):
        generate_grid(mixer.model, tokenizer, mixer, prompts, points.drop(columns="lam_safe"), SETTINGS, progress=False)


def test_out_of_memory_halves_the_batch(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    expected = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    real_generate, sizes = mixer.model.generate, []

    def small_memory_generate(*, input_ids, **kwargs):
        sizes.append(len(input_ids))
        if len(input_ids) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(mixer.model, "generate", small_memory_generate)
    pd.testing.assert_frame_equal(generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False), expected)
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}


def test_out_of_memory_halves_the_token_budget(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    expected = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    real_generate, shapes = mixer.model.generate, []

    def small_memory_generate(*, input_ids, max_new_tokens, **kwargs):
        shapes.append(tuple(input_ids.shape))
        if input_ids.shape[0] * (input_ids.shape[1] + max_new_tokens) > 60:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(input_ids=input_ids, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(mixer.model, "generate", small_memory_generate)
    result = generate_grid(mixer.model, tokenizer, mixer, prompts, points, BUDGETED, progress=False)
    pd.testing.assert_frame_equal(result, expected)
    # 3 rows × (20 + 8) = 84 > 60 fails, the budget becomes 42: one row of 20 tokens; short rows pair up again
    assert [rows for rows, _ in shapes[:3]] == [3, 1, 1]
    assert all(rows * (width + 8) <= 42 for rows, width in shapes[1:]) and max(rows for rows, _ in shapes) == 3
    assert sum(rows for rows, _ in shapes[1:]) == len(expected)


def test_sampling_is_seeded(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    sampled = GenerationSettings(max_new_tokens=8, batch_size=8, do_sample=True, temperature=0.8, top_p=0.9, seed=3)
    real_generate, options = mixer.model.generate, []

    def recording_generate(**kwargs):
        options.append({k: kwargs.get(k) for k in ("do_sample", "temperature", "top_p")})
        return real_generate(**kwargs)

    monkeypatch.setattr(mixer.model, "generate", recording_generate)
    runs = [generate_grid(mixer.model, tokenizer, mixer, prompts, points, sampled, progress=False) for _ in range(2)]
    pd.testing.assert_frame_equal(*runs)  # the same seed: the same text
    assert options and all(o == {"do_sample": True, "temperature": 0.8, "top_p": 0.9} for o in options)
    # ... and it really samples: another seed gives other text, and neither is the greedy answer
    other = generate_grid(mixer.model, tokenizer, mixer, prompts, points, replace(sampled, seed=4), progress=False)
    greedy = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    assert (other.response != runs[0].response).mean() > 0.5
    assert (runs[0].response != greedy.response).mean() > 0.5 and (other.response != greedy.response).mean() > 0.5
