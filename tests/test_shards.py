"""Resume shards carry the checksums of every other artifact: a shard that is corrupt (a flipped value, a failed page
checksum, truncated, no checksum record, wrong columns or row count) is recomputed, never merged, and one warning line
in the job's log names the shard and the reason (issue 22, item 4)."""
from __future__ import annotations

import logging
import struct
from pathlib import Path

import pandas as pd
import pytest

from mva_core.artifacts import CHECKSUMS_FILE, file_sha256, write_parquet
from mva_core.oracles import OracleScorer
from mva_core.reward_models import score_generations

SCORER = OracleScorer("conciseness")  # reward = -(word count): exact, known floats
ROWS = 6
PROMPTS = pd.DataFrame({"prompt_id": [f"q{i}" for i in range(ROWS)],
                        "prompt": [[{"role": "user", "content": f"Question {i}?"}] for i in range(ROWS)]})
GENERATIONS = pd.DataFrame({"point_id": ["p0"] * ROWS, "prompt_id": PROMPTS["prompt_id"],
                            "response": [" ".join(["word"] * (i + 1)) for i in range(ROWS)]})  # rewards -1 ... -6


def _score(shard_dir: Path | None) -> pd.DataFrame:
    return score_generations(SCORER, GENERATIONS, PROMPTS, "concise", shard_dir=shard_dir, shard_size=3)


CLEAN = _score(None)


@pytest.fixture
def shards(tmp_path) -> Path:
    """A finished sharded scoring: its fingerprint folder, holding shard-00000 (rewards -1, -2, -3) and shard-00001."""
    pd.testing.assert_frame_equal(_score(tmp_path), CLEAN)
    (folder,) = tmp_path.iterdir()
    assert sorted(p.name for p in folder.glob("shard-*.parquet")) == ["shard-00000.parquet", "shard-00001.parquet"]
    return folder


@pytest.fixture
def scored(monkeypatch) -> list[int]:
    """Rows of each shard scored (not read back) from here on."""
    calls, real_score = [], OracleScorer.score

    def counting(self, prompts, responses):
        calls.append(len(responses))
        return real_score(self, prompts, responses)

    monkeypatch.setattr(OracleScorer, "score", counting)
    return calls


def _flip_value(shard: Path, old: float = -3.0, new: float = -999.0) -> None:
    """Overwrite the first copy of ``old`` in the file (its value in the data, not the footer's statistics)."""
    data = shard.read_bytes()
    at = data.index(struct.pack("<d", old))
    shard.write_bytes(data[:at] + struct.pack("<d", new) + data[at + 8:])


def _record(folder: Path, *names: str) -> None:
    """A checksum manifest recording the current sha256 of exactly ``names``."""
    (folder / CHECKSUMS_FILE).write_text("".join(f"{file_sha256(folder / n)}  {n}\n" for n in names))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _assert_redone(caplog, scored: list[int], reason: str, *redone: Path) -> None:
    """Exactly the ``redone`` shards were scored again, each with one warning naming it and ``reason``."""
    lines = _warnings(caplog)
    assert len(lines) == len(redone), lines
    for shard, line in zip(redone, lines):
        assert str(shard) in line and reason in line and "recomputing" in line, line
        assert (shard.parent / CHECKSUMS_FILE).read_text().count(file_sha256(shard)) == 1  # recorded again
    assert scored == [3] * len(redone)


def test_finished_shards_are_recorded_in_a_checksum_manifest_and_reused(shards, scored, caplog):
    recorded = (shards / CHECKSUMS_FILE).read_text().splitlines()
    assert recorded == [f"{file_sha256(shards / n)}  {n}" for n in ["shard-00000.parquet", "shard-00001.parquet"]]
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    assert scored == [] and _warnings(caplog) == []


def test_a_flipped_value_is_recomputed_not_merged(shards, scored, caplog):
    shard = shards / "shard-00000.parquet"
    _flip_value(shard)
    assert pd.read_parquet(shard)["reward"].tolist() == [-1.0, -2.0, -999.0]  # the case: it still parses
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    _assert_redone(caplog, scored, "differs from the sha256 recorded", shard)


def test_a_flipped_value_with_a_matching_sha256_record_fails_its_page_checksum(shards, scored, caplog):
    shard = shards / "shard-00000.parquet"
    _flip_value(shard)
    _record(shards, "shard-00000.parquet", "shard-00001.parquet")
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    _assert_redone(caplog, scored, "CRC checksum verification failed", shard)


def test_a_shard_whose_checksum_record_was_deleted_is_recomputed(shards, scored, caplog):
    shard = shards / "shard-00000.parquet"
    _flip_value(shard)
    _record(shards, "shard-00001.parquet")
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    _assert_redone(caplog, scored, f"no sha256 recorded in {CHECKSUMS_FILE}", shard)


def test_shards_without_a_checksum_manifest_are_all_recomputed(shards, scored, caplog):
    _flip_value(shards / "shard-00000.parquet")
    (shards / CHECKSUMS_FILE).unlink(missing_ok=True)
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    _assert_redone(caplog, scored, "no sha256 recorded", *sorted(shards.glob("shard-*.parquet")))


def test_an_unreadable_checksum_manifest_has_every_shard_recomputed(shards, scored, caplog):
    (shards / CHECKSUMS_FILE).write_bytes(b"\xff\xfe garbage")
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    assert scored == [3, 3] and "cannot be read" in _warnings(caplog)[0]
    assert (shards / CHECKSUMS_FILE).read_text().count("shard-") == 2


@pytest.mark.parametrize("rerecorded", [False, True], ids=["sha256", "parquet"])
def test_a_truncated_shard_is_recomputed(shards, scored, caplog, rerecorded):
    shard = shards / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    if rerecorded:
        _record(shards, "shard-00000.parquet", "shard-00001.parquet")
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    reason = "unreadable Parquet" if rerecorded else "differs from the sha256 recorded"
    _assert_redone(caplog, scored, reason, shard)


@pytest.mark.parametrize("frame, reason", [
    (pd.DataFrame({"score": [-1.0, -2.0, -3.0]}), "columns ['score'], expected ['reward']"),
    (pd.DataFrame({"reward": [-1.0, -2.0]}), "2 rows, expected 3"),
], ids=["columns", "rows"])
def test_a_checksummed_shard_of_the_wrong_shape_is_recomputed(shards, scored, caplog, frame, reason):
    """E.g. written by another version of the code under the same fingerprint: its checksums match, its shape not."""
    shard = shards / "shard-00000.parquet"
    write_parquet(frame, shard)
    _record(shards, "shard-00000.parquet", "shard-00001.parquet")
    pd.testing.assert_frame_equal(_score(shards.parent), CLEAN)
    _assert_redone(caplog, scored, reason, shard)
