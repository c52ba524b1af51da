"""Finished artifacts check themselves on read: Parquet page checksums, a sha256 manifest in every artifact
directory, finite adapter weights; every workflow job verifies its inputs before use (issue 15, case 3)."""
from __future__ import annotations

import os
import stat

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from mva_core.artifacts import CHECKSUMS_FILE, CorruptArtifactError, atomic_directory, verify_artifact, write_parquet
from mva_core.combine import read_value_vector


def _table(path):
    write_parquet(pd.DataFrame({"prompt_id": [f"p{i}" for i in range(500)], "reward": range(500)}), path)


def _adapter(folder):
    import json

    with atomic_directory(folder) as tmp:
        save_file({"base_model.model.layer.q_proj.lora_A.weight": torch.randn(2, 4),
                   "base_model.model.layer.q_proj.lora_B.weight": torch.randn(4, 2)}, tmp / "adapter_model.safetensors")
        (tmp / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 4, "r": 2}))


def test_intact_artifacts_pass(tmp_path):
    _table(tmp_path / "t.parquet")
    _adapter(tmp_path / "vec")
    verify_artifact(tmp_path / "t.parquet")
    verify_artifact(tmp_path / "vec")
    assert set(read_value_vector(tmp_path / "vec")) == {"layer.q_proj"}


def test_a_flipped_byte_in_a_parquet_page_is_detected_naming_the_file(tmp_path):
    path = tmp_path / "scores.parquet"
    _table(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 4] ^= 0xFF  # inside the first data page, far from the footer
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match=rf"{path}.*corrupt.*Delete it and rerun"):
        verify_artifact(path)


def test_a_truncated_parquet_is_detected_naming_the_file(tmp_path):
    path = tmp_path / "scores.parquet"
    _table(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptArtifactError, match=str(path)):
        verify_artifact(path)


def test_a_same_size_adapter_overwritten_with_nan_is_refused(tmp_path):
    folder = tmp_path / "vec"
    _adapter(folder)
    weights = folder / "adapter_model.safetensors"
    before = weights.stat().st_size
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}, weights)
    assert weights.stat().st_size == before
    with pytest.raises(CorruptArtifactError, match=rf"{folder}.*adapter_model.safetensors differs"):
        read_value_vector(folder)


def test_snakemakes_timestamp_marker_is_not_an_extra_file(tmp_path):
    _adapter(tmp_path / "vec")
    (tmp_path / "vec" / ".snakemake_timestamp").write_text("")  # Snakemake adds it to directory outputs
    verify_artifact(tmp_path / "vec")
    (tmp_path / "vec" / "stray.bin").write_bytes(b"x")
    with pytest.raises(CorruptArtifactError, match="files not written with it: \\['stray.bin'\\]"):
        verify_artifact(tmp_path / "vec")


def test_a_truncated_adapter_and_a_missing_file_are_named(tmp_path):
    folder = tmp_path / "vec"
    _adapter(folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CorruptArtifactError, match="adapter_model.safetensors differs"):
        verify_artifact(folder)
    _adapter(folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(CorruptArtifactError, match="adapter_config.json is missing"):
        verify_artifact(folder)


def test_nan_weights_without_a_manifest_are_still_refused(tmp_path):
    folder = tmp_path / "vec"
    _adapter(folder)
    (folder / CHECKSUMS_FILE).unlink()  # e.g. an adapter from elsewhere
    weights = folder / "adapter_model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}, weights)
    with pytest.raises(ValueError, match="holds NaN or inf"):
        read_value_vector(folder)


def test_directory_artifacts_are_group_readable(tmp_path):
    previous = os.umask(0o022)
    try:
        _adapter(tmp_path / "vec")
    finally:
        os.umask(previous)
    for name in ["adapter_model.safetensors", "adapter_config.json", CHECKSUMS_FILE]:
        assert stat.S_IMODE((tmp_path / "vec" / name).stat().st_mode) == 0o644, name
