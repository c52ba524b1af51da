"""Tests for the preference-data layer (tiny fixtures in tmp_path; real files in shared/data when present)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from mva_core.data import (
    DataError,
    SourceSpec,
    load_pairs,
    load_prompts,
    prepare_value_data,
    prompt_text,
    resolve_source,
    split_by_prompt,
)

SHARED_DATA = Path(os.environ.get("MVA_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent")

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a colour."}], "chosen": "Blue.", "rejected": "No."},
]
HH_MULTI = (
    "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.\nThen knead.\n\n"
    "Human: And then?  \n\nAssistant: Bake it."
)
PKU_ROW = {"prompt": "q", "response_0": "r0", "response_1": "r1", "is_response_0_safe": True,
           "is_response_1_safe": False, "better_response_id": 1, "safer_response_id": 0}


def write(path: Path, rows: list) -> Path:
    """Write ``rows`` in the format given by ``path``'s extension."""
    name = path.name
    if name.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path, index=False)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        text = "".join(json.dumps(row) + "\n" for row in rows)
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    else:
        text = json.dumps(rows)
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


def hh(prompt_turns: str, chosen: str, rejected: str) -> dict:
    return {"chosen": f"{prompt_turns}\n\nAssistant: {chosen}", "rejected": f"{prompt_turns}\n\nAssistant: {rejected}"}


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.gz", "p.json", "p.json.gz", "p.parquet"])
def test_every_file_type_reads_the_same_pairs(tmp_path, name):
    rows = PAIRS if not name.endswith(".parquet") else [PAIRS[1]]  # parquet columns need one prompt type
    df = load_pairs(str(write(tmp_path / name, rows)))
    assert list(df.columns) == ["pair_id", "prompt", "chosen", "rejected", "source"]
    assert df["prompt"].iloc[-1] == PAIRS[1]["prompt"]
    assert df["chosen"].tolist()[-1] == "Blue." and df.attrs["rows_read"] == len(rows)
    assert df["source"].iloc[0] == str(tmp_path / name)
    assert df["pair_id"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_pairs_string_prompt_becomes_one_user_message(tmp_path):
    df = load_pairs(str(write(tmp_path / "p.json", PAIRS)))
    assert df["prompt"].iloc[0] == [{"role": "user", "content": "What is 2+2?"}]


def test_json_file_holding_json_lines_is_read(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS))
    assert len(load_pairs(str(path))) == 2


def test_hh_multi_turn_transcript(tmp_path):
    df = load_pairs(str(write(tmp_path / "hh.jsonl", [{"chosen": HH_MULTI, "rejected": HH_MULTI[:-9] + " Burn it."}])))
    row = df.iloc[0]
    assert row["prompt"] == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Mix flour and water.\nThen knead."},
        {"role": "user", "content": "And then?"},
    ]
    assert (row["chosen"], row["rejected"]) == ("Bake it.", "Burn it.")


def test_hh_without_leading_blank_line_and_inline_markers(tmp_path):
    row = {"chosen": "Human: Hi\n\nAssistant: Human: is how you start.  Human: ok?\n\n",
           "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: rude"}
    df = load_pairs(str(write(tmp_path / "hh.jsonl", [row])))
    assert df["prompt"].iloc[0] == [{"role": "user", "content": "Hi"}]
    assert df["chosen"].iloc[0] == "Human: is how you start.  Human: ok?"
    assert df["rejected"].iloc[0] == "Go away.\n\nHuman: rude"  # text after the final Assistant marker


def test_hh_prompt_mismatch_is_dropped(tmp_path):
    mismatch = {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}
    rows = [hh("\n\nHuman: a", "x", "y"), mismatch]
    df = load_pairs(str(write(tmp_path / "hh.jsonl", rows)))
    assert len(df) == 1 and df.attrs["drops"]["prompt_mismatch"] == 1


def test_pku_views_pick_their_label(tmp_path):
    path = str(write(tmp_path / "pku.json", [PKU_ROW]))
    better = load_pairs(SourceSpec(path, view="better"))
    safer = load_pairs(SourceSpec(path, format="pku", view="safer"))
    assert (better["chosen"].iloc[0], better["rejected"].iloc[0]) == ("r1", "r0")
    assert (safer["chosen"].iloc[0], safer["rejected"].iloc[0]) == ("r0", "r1")
    assert better["prompt"].iloc[0] == [{"role": "user", "content": "q"}]
    assert better["source"].iloc[0] == f"{path}#better" and better["pair_id"].iloc[0] != safer["pair_id"].iloc[0]


def test_pku_needs_a_view(tmp_path):
    with pytest.raises(DataError, match="view"):
        SourceSpec("x.json", format="pku")
    path = str(write(tmp_path / "pku.json", [PKU_ROW]))
    with pytest.raises(DataError, match=r"pku\.json.*view='better'"):
        load_pairs(path)
    with pytest.raises(DataError, match="applies only to pku rows"):
        load_pairs(SourceSpec(str(write(tmp_path / "p.json", PAIRS)), view="safer"))


def test_prompt_response_format(tmp_path):
    df = load_pairs(str(write(tmp_path / "pr.parquet", [{"prompt": "q", "response": ["good", "bad"]}])))
    assert (df["chosen"].iloc[0], df["rejected"].iloc[0]) == ("good", "bad")


def test_explicit_format_wins_and_unknown_keys_fail(tmp_path):
    path = str(write(tmp_path / "p.json", [{"prompt": "q", **hh("\n\nHuman: real", "x", "y")}]))
    assert load_pairs(SourceSpec(path, format="hh"))["prompt"].iloc[0][0]["content"] == "real"
    with pytest.raises(DataError, match=r"cannot detect the row format.*row 1.*foo"):
        load_pairs(str(write(tmp_path / "odd.json", [{"foo": 1}])))


def test_max_rows(tmp_path):
    df = load_pairs(SourceSpec(str(write(tmp_path / "p.jsonl", PAIRS)), max_rows=1))
    assert len(df) == 1 and df.attrs["rows_read"] == 1
    with pytest.raises(DataError, match="max_rows"):
        SourceSpec("p.jsonl", max_rows=0)


# ---------------------------------------------------------------- drops and bad rows


def test_drops_are_counted_by_reason(tmp_path):
    rows = [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": " ", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "a", "rejected": "  "},
        {"prompt": "q3", "chosen": "same", "rejected": "same "},
        {"prompt": "q1 ", "chosen": "a", "rejected": "b"},
    ]
    df = load_pairs(str(write(tmp_path / "p.jsonl", rows)))
    assert len(df) == 1 and df.attrs["rows_read"] == 5
    assert df.attrs["drops"] == {"malformed": 0, "prompt_mismatch": 0, "empty": 2, "identical": 1, "duplicate": 1,
                                 "similar_length": 0, "oracle_margin": 0, "length_confound": 0}


BAD_ROWS = [
    ({"prompt": "q", "chosen": "a"}, r"line 2, field 'rejected': missing"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, r"line 2, field 'chosen': expected a string, got int"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, r"line 2, field 'prompt'"),
    ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, r"line 2, field 'prompt': message 0"),
    ("not json", r"line 2: invalid JSON"),
    ([1, 2], r"line 2: expected an object"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_malformed_row_raises_or_is_skipped(tmp_path, bad, message):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
    with pytest.raises(DataError, match=rf"p\.jsonl, {message}"):
        load_pairs(str(path))
    df = load_pairs(str(path), on_bad_row="skip")
    assert len(df) == 1 and df.attrs["drops"]["malformed"] == 1 and df.attrs["rows_read"] == 2


@pytest.mark.parametrize("row, field, message", [
    ({"chosen": "\n\nHuman: q", "rejected": "\n\nHuman: q\n\nAssistant: b"}, "chosen", "no 'Assistant:' turn"),
    ({"chosen": "intro\n\nHuman: q\n\nAssistant: a", "rejected": "intro\n\nHuman: q\n\nAssistant: b"}, "chosen",
     "text before the first"),
    (hh("\n\nHuman: q\n\nAssistant: x", "a", "b"), "chosen", "not a Human turn"),
])
def test_malformed_hh_rows(tmp_path, row, field, message):
    path = write(tmp_path / "hh.json", [hh("\n\nHuman: ok", "a", "b"), row])
    with pytest.raises(DataError, match=rf"hh\.json, row 2, field '{field}': .*{message}"):
        load_pairs(SourceSpec(str(path), format="hh"))


def test_bad_pku_label(tmp_path):
    path = write(tmp_path / "pku.json", [{**PKU_ROW, "safer_response_id": 2}])
    with pytest.raises(DataError, match=r"row 1, field 'safer_response_id': expected 0 or 1, got 2"):
        load_pairs(SourceSpec(str(path), view="safer"))


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl.gz", b"this is not gzip", r"bad\.jsonl\.gz: cannot read file"),
    ("trunc.jsonl.gz", gzip.compress(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n' * 50, mtime=0)[:40],  # stable id
     r"trunc\.jsonl\.gz: cannot read file"),
    ("empty.jsonl", b"", r"empty\.jsonl: no rows"),
    ("empty.json", b"  \n", r"empty\.json: file is empty"),
    ("empty_array.json", b"[]", r"empty_array\.json: no rows"),
    ("broken.json", b'[{"prompt": "q",\n "chosen": }]', r"broken\.json: invalid JSON at line 2"),
    ("object.json", b'"text"', r"object\.json: expected a JSON array"),
    ("notparquet.parquet", b"junk", r"notparquet\.parquet: cannot read file"),
    ("data.csv", b"a,b\n", r"data\.csv: unsupported data file"),
])
def test_unreadable_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_pairs(str(tmp_path / name))


def test_on_bad_row_is_checked(tmp_path):
    with pytest.raises(DataError, match="on_bad_row"):
        load_pairs(str(write(tmp_path / "p.json", PAIRS)), on_bad_row="ignore")


# ---------------------------------------------------------------- locating sources


def test_resolve_source_root_order(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        (root / "sub").mkdir(parents=True)
    (second / "sub" / "x.jsonl").write_text("{}")
    assert resolve_source("sub/x.jsonl", [first, second]) == second / "sub" / "x.jsonl"
    (first / "sub" / "x.jsonl").write_text("{}")
    assert resolve_source("sub/x.jsonl", [str(first), second]) == first / "sub" / "x.jsonl"
    assert resolve_source(str(second / "sub" / "x.jsonl"), []) == second / "sub" / "x.jsonl"
    assert resolve_source("Anthropic/hh-rlhf", [first]) == "Anthropic/hh-rlhf"


def test_missing_file_error_lists_roots_and_hint(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    with pytest.raises(DataError) as info:
        resolve_source("hh/test.jsonl.gz", [first, second])
    message = str(info.value)
    assert str(first / "hh/test.jsonl.gz") in message and str(second / "hh/test.jsonl.gz") in message
    assert f"Put the file at {first / 'hh/test.jsonl.gz'}" in message
    with pytest.raises(DataError, match="not found"):
        load_pairs(str(tmp_path / "absent.jsonl"))
    with pytest.raises(DataError, match="no data roots"):
        resolve_source("rel/x.jsonl", [])


def test_hub_source(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load(path, data_dir=None, split=None):
        calls.append((path, data_dir, split))
        return datasets.Dataset.from_list([hh("\n\nHuman: q", "a", "b")])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    df = load_pairs(SourceSpec("Anthropic/hh-rlhf", hub_data_dir="harmless-base", hub_split="test"), [tmp_path])
    assert calls == [("Anthropic/hh-rlhf", "harmless-base", "test")]
    assert df["chosen"].tolist() == ["a"] and df["source"].iloc[0] == "Anthropic/hh-rlhf"


def test_hub_failure_says_where_to_put_a_copy(monkeypatch, tmp_path):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=rf"could not load .*Anthropic/hh-rlhf.*no network.*{tmp_path}"):
        load_pairs(SourceSpec("Anthropic/hh-rlhf", hub_data_dir="harmless-base"), [tmp_path])


# ---------------------------------------------------------------- prompts


def test_load_prompts(tmp_path):
    rows = [{"prompt": "How?", "category": "a", "category_id": 0}, {"prompt": "Why?"}, {"prompt": "How? "},
            {"prompt": ""}]
    df = load_prompts(str(write(tmp_path / "eval.json", rows)))
    assert list(df.columns) == ["prompt_id", "prompt", "category", "source"]
    assert df["category"].tolist() == ["a", None]
    assert df["prompt_id"].iloc[0] == hashlib.sha256(b"user: How?").hexdigest()[:16]
    assert df.attrs["drops"] == {"malformed": 0, "empty": 1, "duplicate": 1}
    with pytest.raises(DataError, match=r"row 1, field 'category'"):
        load_prompts(str(write(tmp_path / "bad.json", [{"prompt": "q", "category": 3}])))


def test_prompt_text():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert prompt_text(messages) == "user: a\nassistant: b"


# ---------------------------------------------------------------- splitting


def many_pairs(tmp_path, n: int = 300, name: str = "many.jsonl") -> pd.DataFrame:
    rows = [{"prompt": f"question {i % (n // 3)}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]
    return load_pairs(str(write(tmp_path / name, rows)))


def test_split_is_deterministic_and_prompt_disjoint(tmp_path):
    df = many_pairs(tmp_path)
    fractions = {"train": 0.6, "eval": 0.3}
    splits = split_by_prompt(df, fractions)
    again = split_by_prompt(df.sample(frac=1, random_state=0), fractions)
    for name in fractions:
        pd.testing.assert_frame_equal(splits[name], again[name])
    prompts = {name: set(part["prompt"].map(prompt_text)) for name, part in splits.items()}
    assert not prompts["train"] & prompts["eval"]
    assert 0.45 * len(df) < len(splits["train"]) < 0.75 * len(df)
    assert len(splits["train"]) + len(splits["eval"]) < len(df)  # the 10% remainder is unused
    assert not splits["train"]["pair_id"].is_monotonic_increasing  # shuffled, not in file order
    assert set(split_by_prompt(df, fractions, salt="x")["train"]["pair_id"]) != set(splits["train"]["pair_id"])


@pytest.mark.parametrize("fractions, message", [
    ({"a": 0.7, "b": 0.4}, "sum to 1.1"), ({"a": 0.0}, "'a' must be > 0"), ({}, "empty"),
])
def test_split_fractions_are_checked(fractions, message):
    with pytest.raises(DataError, match=message):
        split_by_prompt(pd.DataFrame(columns=["pair_id", "prompt"]), fractions)


def test_split_fractions_summing_to_one_use_every_row(tmp_path):
    df = many_pairs(tmp_path)
    splits = split_by_prompt(df, {"a": 0.1, "b": 0.2, "c": 0.7})
    assert sum(len(part) for part in splits.values()) == len(df)


# ---------------------------------------------------------------- per-value preparation


def test_prepare_value_data(tmp_path):
    many_pairs(tmp_path)  # writes many.jsonl
    write(tmp_path / "extra.json", [{"prompt": "question 1", "chosen": "good 1", "rejected": "bad 1"},
                                    {"prompt": "new", "chosen": "x", "rejected": "x"}])
    sources = [SourceSpec("many.jsonl"), SourceSpec("extra.json")]
    prepared = prepare_value_data("helpful", sources, {"dpo_train": 0.5, "eval": 0.4}, {"dpo_train": 20},
                                  [tmp_path])
    assert len(prepared.splits["dpo_train"]) == 20
    assert len(prepared.splits["eval"]) > 20
    assert list(prepared.splits["eval"].columns) == ["pair_id", "prompt", "chosen", "rejected", "source"]
    summary = prepared.summary.set_index(["source", "stage", "reason"])["rows"]
    assert summary[("extra.json", "read", "")] == 2
    assert summary[("extra.json", "dropped", "identical")] == 1
    assert summary[("extra.json", "dropped", "cross_source_duplicate")] == 1
    assert summary[("many.jsonl", "kept", "dpo_train")] == 20
    for source in ("many.jsonl", "extra.json"):  # every read row is accounted for
        rows = prepared.summary[prepared.summary["source"] == source]
        assert rows.loc[rows["stage"] == "read", "rows"].sum() == rows.loc[rows["stage"] != "read", "rows"].sum()
    again = prepare_value_data("helpful", sources, {"dpo_train": 0.5, "eval": 0.4}, {"dpo_train": 20}, [tmp_path])
    pd.testing.assert_frame_equal(prepared.splits["dpo_train"], again.splits["dpo_train"])


def test_prepare_value_data_errors(tmp_path):
    write(tmp_path / "one.json", [PAIRS[0]])
    with pytest.raises(DataError, match=r"value 'harmless': split '(a|b)' is empty.*add data"):
        prepare_value_data("harmless", [SourceSpec("one.json")], {"a": 0.5, "b": 0.5}, {}, [tmp_path])
    with pytest.raises(DataError, match="max_pairs names split 'dpo'"):
        prepare_value_data("harmless", [SourceSpec("one.json")], {"a": 1.0}, {"dpo": 5}, [tmp_path])
    with pytest.raises(DataError, match="listed twice"):
        prepare_value_data("harmless", [SourceSpec("one.json")] * 2, {"a": 1.0}, {}, [tmp_path])


# ---------------------------------------------------------------- real data (shared/data)


@needs_shared
def test_real_hh_harmless_base():
    df = load_pairs("hh-rlhf/harmless-base/test.jsonl.gz", [SHARED_DATA])
    assert df.attrs["rows_read"] == 2312 and 2290 <= len(df) <= 2312
    assert sum(df.attrs["drops"].values()) == 2312 - len(df)
    assert df["pair_id"].is_unique
    assert all(p and p[-1]["role"] == "user" for p in df["prompt"])
    assert (df["prompt"].map(len) == 1).sum() >= 600  # ~662 single-turn dialogues


@needs_shared
def test_real_hh_helpful_base_drops_the_two_identical_rows():
    df = load_pairs("hh-rlhf/helpful-base/test.jsonl.gz", [SHARED_DATA])
    assert df.attrs["rows_read"] == 2354 and df.attrs["drops"]["identical"] == 2
    assert not (df["chosen"] == df["rejected"]).any()


@needs_shared
def test_real_lastturn_and_pku_pairs():
    lastturn = load_pairs("hh-rlhf-harmless-base-train-lastturn-5k/preference_train.json", [SHARED_DATA])
    assert lastturn.attrs["rows_read"] == 5000 and len(lastturn) >= 4990
    pku = load_pairs("pku-saferlhf-v0-test-safety-pairs-5k/pku_seferlhf_realign_dpo_5k.json", [SHARED_DATA])
    assert pku.attrs["rows_read"] == 5135
    assert pku["prompt"].map(prompt_text).nunique() == 930
    assert len(pku) + pku.attrs["drops"]["duplicate"] == 5135  # the file repeats many pairs verbatim


@needs_shared
def test_real_pku_sample_both_views():
    path = "pku-saferlhf-sample-32/train.json"
    better = load_pairs(SourceSpec(path, view="better"), [SHARED_DATA])
    safer = load_pairs(SourceSpec(path, view="safer"), [SHARED_DATA])
    assert len(better) == len(safer) == 32
    raw = json.loads((SHARED_DATA / path).read_text())
    disagree = sum(row["better_response_id"] != row["safer_response_id"] for row in raw)
    assert (better["chosen"] != safer["chosen"]).sum() == disagree == 19


@needs_shared
def test_real_beavertails_prompts():
    df = load_prompts("beavertails-evaluation/BeaverTails-Evaluation.json", [SHARED_DATA])
    assert len(df) == 700 and df["prompt_id"].is_unique
    assert df["category"].nunique() == 14


def test_conversations_opening_with_the_same_question_share_a_split():
    from mva_core.data import split_by_prompt

    rows = []
    for i in range(60):
        question = f"Question number {i}?"
        rows.append({"pair_id": f"m{i}", "prompt": [{"role": "user", "content": question},
                                                   {"role": "assistant", "content": "ok"},
                                                   {"role": "user", "content": "more?"}],
                     "chosen": "a", "rejected": "b", "source": "multi"})
        rows.append({"pair_id": f"l{i}", "prompt": [{"role": "user", "content": f"  question NUMBER {i}?"}],
                     "chosen": "a", "rejected": "b", "source": "last"})
    splits = split_by_prompt(pd.DataFrame(rows), {"train": 0.5, "eval": 0.5})
    where = {pid[1:] + pid[0]: name for name, part in splits.items() for pid in part["pair_id"]}
    assert all(where[f"{i}m"] == where[f"{i}l"] for i in range(60))
    assert set(where.values()) == {"train", "eval"}


def test_derived_conciseness_prefers_the_shorter_reply(tmp_path):
    from mva_core.data import SourceSpec, load_pairs

    rows = [
        {"prompt": "q1", "chosen": "a long and detailed helpful answer here", "rejected": "short"},
        {"prompt": "q2", "chosen": "tiny", "rejected": "a much longer rejected answer text"},
        {"prompt": "q3", "chosen": "two words", "rejected": "two more"},
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows))
    df = load_pairs(SourceSpec(path=str(path), derive="shorter"))
    assert df["chosen"].tolist() == ["short", "tiny"]
    assert df["rejected"].tolist() == ["a long and detailed helpful answer here", "a much longer rejected answer text"]
    assert df.attrs["drops"]["similar_length"] == 1
    assert df["source"].iloc[0].endswith("#shorter")
