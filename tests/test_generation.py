"""generate_grid: per-row λ batches equal merged models, only new tokens, batching invariance (rows and token
budget), shard resume, out-of-memory back-off and growth back, sampling seeded per row (independent of batch size,
out-of-memory halving and job splits), several samples per prompt, split and merged parts."""
from __future__ import annotations

import copy
from dataclasses import replace

import pandas as pd
import pytest
import torch

from mva_core.combine import ValueMixer, merge_explicit
from mva_core.generation import GenerationSettings, MemoryBackoff, encode_prompts, generate_grid, merge_parts, plan_batches
from mva_core.sampling import RowSampler, row_seed

QUESTIONS = ["Hi", "What is the capital of France?", "Please explain how photosynthesis works in simple words.",
             "How do I fix a flat tire?", "Mix flour"]
SETTINGS = GenerationSettings(max_new_tokens=8, batch_size=8)
BUDGETED = GenerationSettings(max_new_tokens=8, batch_size=8, max_batch_tokens=100)  # prompts of 13-20 tokens
SAMPLED = GenerationSettings(max_new_tokens=8, batch_size=8, do_sample=True, temperature=0.8, top_p=0.9, top_k=40, seed=3)


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
    assert list(result.columns) == ["point_id", "prompt_id", "sample", "response", "n_prompt_tokens",
                                    "n_response_tokens", "finished"]
    assert (result["sample"] == 0).all()
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


def flaky_memory(monkeypatch, model, fits) -> list[tuple[int, int, bool]]:
    """Make ``model.generate`` raise an out-of-memory error unless ``fits(rows, padded tokens)``; returns the
    (rows, prompt width, failed) of every call."""
    real_generate, calls = model.generate, []

    def small_memory_generate(*, input_ids, max_new_tokens, **kwargs):
        rows, width = input_ids.shape
        calls.append((rows, width, not fits(rows, rows * (width + max_new_tokens))))
        if calls[-1][2]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(input_ids=input_ids, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(model, "generate", small_memory_generate)
    return calls


def test_out_of_memory_recovery_grows_the_batch_back(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, _ = setup
    points = pd.DataFrame({"point_id": range(16), "lam_care": [i / 8 for i in range(16)], "lam_safe": [1.0] * 16})
    one_prompt = prompts.head(1)  # every row has the same width: memory is a matter of rows
    expected = generate_grid(mixer.model, tokenizer, mixer, one_prompt, points, SETTINGS, progress=False)
    calls = flaky_memory(monkeypatch, mixer.model, lambda rows, tokens: rows <= 6)
    result = generate_grid(mixer.model, tokenizer, mixer, one_prompt, points, SETTINGS, progress=False)
    pd.testing.assert_frame_equal(result, expected)
    # 8 rows fail: half of them; that succeeds and the cap doubles back, up to 3/4 of what failed: 6 rows, which fit
    assert [(rows, failed) for rows, _, failed in calls] == [(8, True), (4, False), (6, False), (6, False)]


def test_out_of_memory_on_the_longest_prompts_leaves_the_short_ones_full_batches(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, _ = setup
    points = pd.DataFrame({"point_id": range(8), "lam_care": [i / 4 for i in range(8)], "lam_safe": [0.5] * 8})
    expected = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    calls = flaky_memory(monkeypatch, mixer.model, lambda rows, tokens: tokens <= 200)
    pd.testing.assert_frame_equal(generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False),
                                  expected)
    assert calls[0][2] and calls[0][:2] == (8, 20)  # the queue starts with the longest prompts: 8 × (20 + 8) > 200
    assert sum(rows for rows, _, failed in calls if not failed) == len(expected)
    # half the failed batch's 224 tokens (4 rows of 20), then back to 3/4 of it: 6 rows of 20, 7 of the shorter 14
    assert [rows for rows, _, failed in calls if not failed][:2] == [4, 6] and (7, 14, False) in calls
    assert sum(failed for *_, failed in calls) == 1


def test_out_of_memory_under_a_token_budget(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    expected = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    calls = flaky_memory(monkeypatch, mixer.model, lambda rows, tokens: tokens <= 60)
    result = generate_grid(mixer.model, tokenizer, mixer, prompts, points, BUDGETED, progress=False)
    pd.testing.assert_frame_equal(result, expected)
    assert calls[0] == (3, 20, True)  # 3 × (20 + 8) = 84 ≤ the budget of 100, but more than fits
    assert all(rows == 1 or rows * (width + 8) <= 100 for rows, width, _ in calls)
    assert sum(rows for rows, _, failed in calls if not failed) == len(expected)
    assert 2 in [rows for rows, _, failed in calls if not failed] and sum(failed for *_, failed in calls) <= 3


def test_a_single_row_out_of_memory_is_raised(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    flaky_memory(monkeypatch, mixer.model, lambda rows, tokens: False)
    with pytest.raises(torch.OutOfMemoryError):
        generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)


def test_memory_backoff_halves_then_grows_back_below_what_failed():
    memory = MemoryBackoff()
    assert memory.limit(None) is None and memory.limit(500) == 500
    memory.failed(800)
    assert memory.limit(None) == 400 and memory.limit(300) == 300
    memory.succeeded()
    assert memory.cap == 600
    memory.succeeded()
    assert memory.cap == 600  # never back to the 800 that failed
    memory.failed(600)
    assert (memory.cap, memory.ceiling) == (300, 600)
    memory.succeeded()
    assert memory.cap == 450


def test_sampling_is_seeded_per_row(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    real_generate, options = mixer.model.generate, []

    def recording_generate(**kwargs):
        options.append((kwargs["do_sample"], [type(p) for p in kwargs.get("logits_processor", [])]))
        return real_generate(**kwargs)

    monkeypatch.setattr(mixer.model, "generate", recording_generate)
    runs = [generate_grid(mixer.model, tokenizer, mixer, prompts, points, SAMPLED, progress=False) for _ in range(2)]
    pd.testing.assert_frame_equal(*runs)  # the same seed: the same text
    assert options and all(o == (False, [RowSampler]) for o in options)  # transformers' own sampling is never used
    # ... and it really samples: another seed gives other text, and neither is the greedy answer
    other = generate_grid(mixer.model, tokenizer, mixer, prompts, points, replace(SAMPLED, seed=4), progress=False)
    greedy = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SETTINGS, progress=False)
    assert (other.response != runs[0].response).mean() > 0.5
    assert (runs[0].response != greedy.response).mean() > 0.5 and (other.response != greedy.response).mean() > 0.5


@pytest.mark.parametrize("batching", [dict(batch_size=1), dict(batch_size=3), dict(max_batch_tokens=60)],
                         ids=["rows_1", "rows_3", "token_budget"])
def test_sampled_outputs_do_not_depend_on_the_batching(setup, batching):
    tokenizer, _, _, mixer, prompts, points = setup
    reference = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SAMPLED, progress=False)
    other = generate_grid(mixer.model, tokenizer, mixer, prompts, points, replace(SAMPLED, **batching), progress=False)
    pd.testing.assert_frame_equal(other, reference)


def test_sampled_outputs_survive_an_out_of_memory_halving(setup, monkeypatch):
    tokenizer, _, _, mixer, prompts, points = setup
    reference = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SAMPLED, progress=False)
    calls = flaky_memory(monkeypatch, mixer.model, lambda rows, tokens: rows <= 3)
    pd.testing.assert_frame_equal(generate_grid(mixer.model, tokenizer, mixer, prompts, points, SAMPLED, progress=False),
                                  reference)
    assert any(failed for *_, failed in calls)


@pytest.mark.parametrize("settings", [SETTINGS, replace(SAMPLED, samples_per_prompt=2)], ids=["greedy", "sampled"])
def test_parts_merge_into_the_single_job_table(setup, settings):
    tokenizer, _, _, mixer, prompts, points = setup
    whole = generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False)
    parts = [generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False, part=i, parts=3)
             for i in range(3)]
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(whole)
    n_prompt_tokens = sorted(whole.n_prompt_tokens, reverse=True)
    assert parts[0].n_prompt_tokens.max() == n_prompt_tokens[0] and parts[2].n_prompt_tokens.max() == n_prompt_tokens[2]
    pd.testing.assert_frame_equal(merge_parts(parts[::-1], prompts, points, settings.samples_per_prompt), whole)
    with pytest.raises(ValueError, match="missing"):
        merge_parts(parts[:2], prompts, points, settings.samples_per_prompt)
    with pytest.raises(ValueError, match="overlap"):
        merge_parts([parts[0], *parts], prompts, points, settings.samples_per_prompt)
    with pytest.raises(ValueError, match="part 3 of 3"):
        generate_grid(mixer.model, tokenizer, mixer, prompts, points, settings, progress=False, part=3, parts=3)


def test_several_samples_per_prompt(setup):
    tokenizer, _, _, mixer, prompts, points = setup
    three = generate_grid(mixer.model, tokenizer, mixer, prompts, points, replace(SAMPLED, samples_per_prompt=3),
                          progress=False)
    assert len(three) == 3 * len(prompts) * len(points) and sorted(three["sample"].unique()) == [0, 1, 2]
    by_sample = three.pivot(index=["point_id", "prompt_id"], columns="sample", values="response")
    assert (by_sample[0] != by_sample[1]).mean() > 0.5  # different draws, not copies
    one = generate_grid(mixer.model, tokenizer, mixer, prompts, points, SAMPLED, progress=False)
    pd.testing.assert_frame_equal(three[three["sample"] == 0].reset_index(drop=True), one)  # seeds per row
    with pytest.raises(ValueError, match="samples_per_prompt"):
        GenerationSettings(samples_per_prompt=2)


def test_the_row_sampler_draws_from_the_warped_distribution():
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    scores = probabilities.log().expand(4000, 4).clone()
    seeds = [row_seed(0, "p", f"q{i}", 0) for i in range(4000)]
    tokens = RowSampler(seeds)(torch.zeros(4000, 1, dtype=torch.long), scores.clone()).argmax(-1)
    frequencies = torch.bincount(tokens, minlength=4) / 4000
    assert torch.allclose(frequencies, probabilities, atol=0.03)
    nucleus = RowSampler(seeds, top_p=0.7)(torch.zeros(4000, 1, dtype=torch.long), scores.clone()).argmax(-1)
    frequencies = torch.bincount(nucleus, minlength=4) / 4000  # top-p keeps 0.5 and 0.3: 0.625 / 0.375
    assert frequencies[2:].sum() == 0 and abs(frequencies[0] - 0.625) < 0.03
    cold = RowSampler(seeds, temperature=0.25, top_k=3)(torch.zeros(4000, 1, dtype=torch.long), scores.clone()).argmax(-1)
    expected = torch.softmax(probabilities.log()[:3] / 0.25, dim=0)
    assert torch.allclose(torch.bincount(cold, minlength=4)[:3] / 4000, expected, atol=0.03)
    assert row_seed(0, "p", "q", 0) != row_seed(0, "p", "q", 1) != row_seed(1, "p", "q", 1)
