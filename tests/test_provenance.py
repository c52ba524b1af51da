"""Provenance records travel inside every artifact a job writes, and contain nothing run-specific."""
from __future__ import annotations

import pandas as pd

from mva_core.artifacts import atomic_directory, provenance_scope, read_provenance, write_json, write_parquet
from mva_core.provenance import job_record, path_digest, provenance_markdown, source_hashes


def _record(tmp_path, inputs=()):
    return job_record("score", {"seed": "3", "method": "mva"}, {"seed": 1, "run_name": "x"}, {"batch": 4}, inputs)


def test_parquet_and_directory_artifacts_carry_the_job_record(tmp_path):
    (tmp_path / "in.txt").write_text("input")
    record = _record(tmp_path, [str(tmp_path / "in.txt")])
    with provenance_scope(record):
        write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet")
        with atomic_directory(tmp_path / "adapter") as tmp:
            (tmp / "weights.bin").write_bytes(b"w")
        write_json({"accuracy": 0.5, "provenance": record}, tmp_path / "acc.json")
    for artifact in ["t.parquet", "adapter", "acc.json"]:
        assert read_provenance(tmp_path / artifact) == record, artifact
    assert record["seed"] == 3 and record["rule"] == "score"
    assert record["inputs"][str(tmp_path / "in.txt")] == path_digest(tmp_path / "in.txt")
    assert set(record["library_versions"]) >= {"torch", "transformers", "trl", "peft"}
    assert pd.read_parquet(tmp_path / "t.parquet")["a"].tolist() == [1, 2]


def test_outside_a_job_artifacts_have_no_record(tmp_path):
    write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    assert read_provenance(tmp_path / "t.parquet") is None


def test_same_job_twice_writes_identical_bytes(tmp_path):
    frames = []
    for name in ["one.parquet", "two.parquet"]:
        with provenance_scope(_record(tmp_path)):
            write_parquet(pd.DataFrame({"a": [1.5, 2.5], "b": ["x", "y"]}), tmp_path / name)
        frames.append((tmp_path / name).read_bytes())
    assert frames[0] == frames[1]


def test_settings_or_input_changes_change_the_record(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a")
    before = _record(tmp_path, [str(source)])
    source.write_text("b")
    assert _record(tmp_path, [str(source)])["inputs"] != before["inputs"]
    changed = job_record("score", {"seed": "3"}, {"seed": 1, "run_name": "x"}, {"batch": 8}, [])
    assert changed["params_hash"] != before["params_hash"] and changed["config_hash"] == before["config_hash"]


def test_directory_digest_covers_content_not_its_own_record(tmp_path):
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "w.bin").write_bytes(b"1")
    first = path_digest(tmp_path / "d")
    (tmp_path / "d" / "provenance.json").write_text("{}")
    assert path_digest(tmp_path / "d") == first
    (tmp_path / "d" / "w.bin").write_bytes(b"2")
    assert path_digest(tmp_path / "d") != first


def test_data_hashes_reach_the_summary(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    hashes = source_hashes(["pairs.jsonl"], [tmp_path])
    assert hashes == {"pairs.jsonl": path_digest(tmp_path / "pairs.jsonl")}
    text = provenance_markdown(_record(tmp_path), [{"data_sources": hashes}])
    assert hashes["pairs.jsonl"] in text and "config hash" in text.lower()
