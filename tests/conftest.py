"""Shared pytest fixtures."""
from __future__ import annotations

import os
import subprocess
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


def snakemake(*args: str, workdir: Path | None = None, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run the workflow (``--directory workdir``) and capture its output."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    if workdir is not None:
        command += ["--directory", str(workdir)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole smoke DAG (plus ``mva_twin``, a renamed copy of mva), run once on synthetic HH data in a temporary
    working directory: (workdir, args)."""
    from synthetic import write_smoke_data_root

    workdir = tmp_path_factory.mktemp("smoke")
    data_root = write_smoke_data_root(tmp_path_factory.mktemp("smoke_data"))
    twin = workdir / "twin.yaml"  # a copy of mva under another name: identical vectors and answers
    twin.write_text("methods:\n  mva_twin: {penalty: {kind: hsic, weight: 10.0, form: lora_a, sigma: 1.0}}\n")
    args = ["--cores", "2", "--configfile", str(REPO / "config/smoke.yaml"), str(twin),
            "--config", f"data_roots=['{data_root}']"]
    result = snakemake(*args, workdir=workdir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return workdir, args
