"""External evaluation prompt sets (``evaluation.prompt_sources``): loading, seeded stratified sampling, mixing
with the eval splits, errors naming file and field, config checks, and the evaluation_prompts rule on its own.

All prompt files are generated in tmp_path; the real BeaverTails-Evaluation file is only read when present.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import snakemake
from synthetic import write_smoke_data_root

from mva_core.config import ConfigError, validate_config
from mva_core.data import DataError, PromptSet, evaluation_prompts, load_prompt_set, load_prompts, sample_prompts

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MVA_SHARED_DATA", REPO.parent / "shared" / "data"))
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent")
CATEGORIES = ["alpha", "beta", "gamma", "delta"]


def write_prompt_file(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows))
    return path


def categorised(per_category: int = 10, categories=CATEGORIES) -> list[dict]:
    return [{"prompt": f"Question {i} about {c}?", "category": c, "category_id": k}
            for k, c in enumerate(categories) for i in range(per_category)]


def entry(name: str = "external", path: str = "prompts.json", **extra) -> dict:
    return {"name": name, "path": path, **extra}


# ---------------------------------------------------------------- loading


def test_load_prompt_set_from_a_data_root(tmp_path):
    write_prompt_file(tmp_path / "prompts.json", categorised(per_category=3))
    prompt_set = load_prompt_set(entry(n=4), [tmp_path / "missing_root", tmp_path])
    assert (prompt_set.name, prompt_set.n, len(prompt_set.prompts)) == ("external", 4, 12)
    assert list(prompt_set.prompts.columns) == ["prompt_id", "prompt", "category", "source"]
    assert set(prompt_set.prompts["category"]) == set(CATEGORIES)


def test_plain_string_prompts_become_one_user_message_and_message_lists_are_kept(tmp_path):
    dialogue = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": " And now? "}]
    write_prompt_file(tmp_path / "prompts.json", [{"prompt": "  Just a question?  "}, {"prompt": dialogue}])
    prompts = load_prompt_set(entry(), [tmp_path]).prompts
    assert prompts["prompt"].iloc[0] == [{"role": "user", "content": "Just a question?"}]
    assert prompts["prompt"].iloc[1][-1] == {"role": "user", "content": "And now?"}
    assert prompts["category"].tolist() == [None, None]


def test_prompt_and_category_fields_are_configurable(tmp_path):
    rows = [{"instruction": f"Task {i}", "topic": "t"} for i in range(3)]
    write_prompt_file(tmp_path / "tasks.json", rows)
    prompts = load_prompt_set(entry(path="tasks.json", prompt_field="instruction", category_field="topic"),
                              [tmp_path]).prompts
    assert [m[0]["content"] for m in prompts["prompt"]] == ["Task 0", "Task 1", "Task 2"]
    assert set(prompts["category"]) == {"t"}
    plain = load_prompt_set(entry(path="tasks.json", prompt_field="instruction", category_field=None), [tmp_path])
    assert plain.prompts["category"].isna().all()


@pytest.mark.parametrize("rows,field,prompt_field", [
    ([{"prompt": "fine"}, {"question": "no prompt key"}], "prompt", "prompt"),
    ([{"prompt": "fine"}, {"prompt": 42}], "prompt", "prompt"),
    ([{"prompt": [{"role": "user"}]}], "prompt", "prompt"),
    ([{"prompt": "fine", "category": ["a", "list"]}], "category", "prompt"),
    ([{"text": "fine"}, {"prompt": "wrong field"}], "text", "text"),
], ids=["missing", "not_a_string", "message_without_content", "bad_category", "custom_field_missing"])
def test_malformed_rows_name_file_row_and_field(tmp_path, rows, field, prompt_field):
    path = write_prompt_file(tmp_path / "bad_prompts.json", rows)
    with pytest.raises(DataError) as err:
        load_prompt_set(entry(path="bad_prompts.json", prompt_field=prompt_field), [tmp_path])
    message = str(err.value)
    assert str(path) in message and f"field {field!r}" in message and "row " in message


def test_malformed_rows_can_be_skipped_and_are_counted(tmp_path):
    write_prompt_file(tmp_path / "prompts.json", [{"prompt": "ok"}, {"prompt": 3}, {"prompt": "ok"}, {"prompt": ""}])
    prompts = load_prompt_set(entry(), [tmp_path], on_bad_row="skip").prompts
    assert len(prompts) == 1
    assert prompts.attrs["drops"] == {"malformed": 1, "empty": 1, "duplicate": 1}


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.json.*looked in"):
        load_prompt_set(entry(path="nowhere.json"), [tmp_path])


# ---------------------------------------------------------------- sampling


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(rows))],
                         "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
                         "category": [r.get("category") for r in rows]})


def test_sampling_is_deterministic_per_seed_and_keeps_file_order():
    prompts = _frame(categorised(per_category=25))
    first = sample_prompts(prompts, 12, seed=7)
    assert first.equals(sample_prompts(prompts, 12, seed=7))
    assert not first["prompt_id"].equals(sample_prompts(prompts, 12, seed=8)["prompt_id"])
    positions = [int(pid[1:]) for pid in first["prompt_id"]]
    assert positions == sorted(positions) and len(set(positions)) == 12


def test_sampling_is_stratified_over_category():
    prompts = _frame(categorised(per_category=25))
    for seed in range(5):
        counts = sample_prompts(prompts, 8, seed=seed)["category"].value_counts()
        assert counts.to_dict() == dict.fromkeys(CATEGORIES, 2)
    # 10 of 4 equal strata: 2 each, the 2 leftover places go to different categories depending on the seed
    leftovers = {tuple(sorted(c for c, k in sample_prompts(prompts, 10, seed=s)["category"].value_counts().items()
                              if k == 3)) for s in range(20)}
    assert all(len(pair) == 2 for pair in leftovers) and len(leftovers) > 1


def test_stratified_shares_are_proportional_and_missing_categories_form_a_stratum():
    rows = categorised(per_category=30, categories=["big"]) + categorised(per_category=10, categories=["small"])
    rows += [{"prompt": f"Uncategorised {i}"} for i in range(20)]
    counts = sample_prompts(_frame(rows), 6, seed=0)["category"].fillna("<none>").value_counts().to_dict()
    assert counts == {"big": 3, "small": 1, "<none>": 2}


def test_sampling_without_categories_or_n():
    prompts = _frame([{"prompt": f"q{i}"} for i in range(30)])
    assert len(sample_prompts(prompts, 5, seed=1)) == 5
    assert sample_prompts(prompts, None, seed=1).equals(prompts)
    with pytest.raises(ValueError, match="cannot draw 31 prompts from 30"):
        sample_prompts(prompts, 31, seed=1)


# ---------------------------------------------------------------- the prompt table


def _split(questions):
    return pd.DataFrame({"prompt": [[{"role": "user", "content": q}] for q in questions]})


def test_prompt_sets_alone_or_after_the_eval_splits(tmp_path):
    write_prompt_file(tmp_path / "prompts.json", categorised(per_category=5) + [{"prompt": "shared question"}])
    prompt_set = load_prompt_set(entry(name="extra", n=8), [tmp_path])
    alone = evaluation_prompts({"helpful": _split(["h1"])}, 0, [prompt_set], seed=3)
    assert list(alone.columns) == ["prompt_id", "prompt", "origin", "category"]
    assert len(alone) == 8 and set(alone["origin"]) == {"extra"} and alone["prompt_id"].is_unique
    assert alone.equals(evaluation_prompts({}, 0, [prompt_set], seed=3))

    mixed = evaluation_prompts({"helpful": _split(["h1", "shared question"])}, 2,
                               [PromptSet("extra", prompt_set.prompts, None)], seed=3)
    assert mixed["origin"].tolist() == ["helpful"] * 2 + ["extra"] * 20  # 21 prompts, one already taken
    assert mixed["prompt_id"].is_unique
    assert mixed["category"].iloc[:2].isna().all() and mixed["category"].iloc[2:].notna().all()


def test_too_few_prompts_name_the_source():
    prompts = _frame([{"prompt": "a"}, {"prompt": "b"}]).assign(prompt_id=["ida", "idb"])
    with pytest.raises(ValueError, match=r"prompt_sources 'tiny': n is 3 but it has only 2"):
        evaluation_prompts({}, 0, [PromptSet("tiny", prompts, 3)])
    taken = pd.DataFrame({"prompt": [[{"role": "user", "content": "a"}]]})
    prompts["prompt_id"] = [evaluation_prompts({"v": taken}, 1)["prompt_id"].iloc[0], "idb"]
    with pytest.raises(ValueError, match=r"only 1 distinct prompts \(1 more are already taken"):
        evaluation_prompts({"v": taken}, 1, [PromptSet("tiny", prompts, 2)])


def test_no_prompts_at_all_is_an_error():
    with pytest.raises(ValueError, match="no evaluation prompts"):
        evaluation_prompts({"v": _split(["x"])}, 0)


# ---------------------------------------------------------------- config


def _config() -> dict:
    return copy.deepcopy(yaml.safe_load((REPO / "config/hh_cpu.yaml").read_text()))


def test_schema_fills_prompt_source_defaults():
    config = _config()
    config["evaluation"]["prompt_sources"] = [entry(path="x.json")]
    source = validate_config(config)["evaluation"]["prompt_sources"][0]
    assert source == {"name": "external", "path": "x.json", "hub_split": "train", "hub_data_dir": None,
                      "prompt_field": "prompt", "category_field": "category", "n": None}
    assert validate_config(_config())["evaluation"]["prompt_sources"] == []


@pytest.mark.parametrize("sources,per_value,culprit", [
    ([entry(name="helpful")], 4, "evaluation.prompt_sources[0].name"),
    ([entry(name="x"), entry(name="x", path="y.json")], 4, "evaluation.prompt_sources[1].name"),
    ([], 0, "evaluation.prompts_per_value"),
    ([entry(n=0)], 4, "evaluation.prompt_sources[0].n"),
    ([{"path": "x.json"}], 4, "evaluation.prompt_sources[0]"),
    ([entry(fields="prompt")], 4, "evaluation.prompt_sources[0]"),
], ids=["value_name", "duplicate_name", "no_prompts", "n_zero", "no_name", "unknown_key"])
def test_bad_prompt_sources_fail_naming_the_key(sources, per_value, culprit):
    config = _config()
    config["evaluation"].update(prompt_sources=sources, prompts_per_value=per_value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"config key '{culprit}" in str(err.value)


# ---------------------------------------------------------------- the rule


def test_evaluation_prompts_rule_reads_only_the_prompt_sources(tmp_path):
    """prompts_per_value 0: the rule needs no preference data, so it runs alone on a generated prompt file."""
    data_root = write_smoke_data_root(tmp_path / "data", n=8)  # the workflow checks that value sources exist
    write_prompt_file(data_root / "eval_prompts.json", categorised(per_category=6))
    extra = {"data_roots": [str(data_root)],
             "evaluation": {"prompts_per_value": 0, "prompt_sources": [entry(path="eval_prompts.json", n=8)]}}
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(extra))
    result = snakemake("results/smoke/evaluation/prompts.parquet", "--cores", "1", "--configfile",
                       str(REPO / "config/smoke.yaml"), str(tmp_path / "extra.yaml"), workdir=tmp_path, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "prepare_value_data" not in result.stdout + result.stderr
    prompts = pd.read_parquet(tmp_path / "results/smoke/evaluation/prompts.parquet")
    assert len(prompts) == 8 and prompts["category"].value_counts().to_dict() == dict.fromkeys(CATEGORIES, 2)


# ---------------------------------------------------------------- the real file


@needs_shared
def test_real_beavertails_evaluation_prompts_of_the_compare_config():
    config = validate_config(yaml.safe_load((REPO / "config/compare_beavertails.yaml").read_text()))
    (source,) = config["evaluation"]["prompt_sources"]
    prompt_set = load_prompt_set(source, [SHARED_DATA])
    assert len(prompt_set.prompts) == 700 and prompt_set.prompts["category"].nunique() == 14
    table = evaluation_prompts({}, config["evaluation"]["prompts_per_value"], [prompt_set], config["seed"])
    assert len(table) == source["n"] == 28
    assert set(table["category"].value_counts()) == {2}
    assert load_prompts(source["path"], [SHARED_DATA])["prompt_id"].is_unique
