"""Shared pytest fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or $MVA_SHARED_DATA)."""
    return Path(os.environ.get("MVA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def repo() -> Path:
    return REPO
