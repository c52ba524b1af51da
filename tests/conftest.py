"""Shared pytest fixtures."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# One torch thread per test process (set before any test module imports torch; inherited by the Snakemake and
# export subprocesses). The tiny models gain nothing from a second thread, and two OpenMP threads on a busy (or
# `nice`d) 2-core machine spin-wait on each other: tests/test_generation.py took 139 s with two threads and 13 s
# with one on this project's 2-core machine under load. It also keeps `pytest -n 2` at two busy cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or $MVA_SHARED_DATA)."""
    return Path(os.environ.get("MVA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def repo() -> Path:
    return REPO


_SHIMS: Path | None = None


def snakemake_env() -> dict[str, str]:
    """The environment for Snakemake subprocesses of the tests.

    Snakemake loads its Slurm executor plugin at start-up, and the plugin runs ``scontrol show config`` (10 s
    timeout) whenever the Slurm client is installed; with no controller answering (a machine where CI's Slurm step
    installed Slurm and stopped its daemons) that costs 9 s per ``snakemake`` call. The tests never submit to
    Slurm, so a stand-in ``scontrol`` that fails at once comes first on PATH (the plugin then only loses a help
    text's default). The Slurm step (tests/slurm) uses the real one.
    """
    global _SHIMS
    if _SHIMS is None:
        _SHIMS = Path(tempfile.mkdtemp(prefix="mva-test-shims-"))
        atexit.register(shutil.rmtree, _SHIMS, True)
        shim = _SHIMS / "scontrol"
        shim.write_text("#!/bin/sh\nexit 1\n")
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{_SHIMS}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake_command(*args: str, workdir: Path | None = None) -> list[str]:
    """``python -m snakemake`` of this Snakefile (``--directory workdir`` first: targets may end ``args``)."""
    directory = ["--directory", str(workdir)] if workdir is not None else []
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *directory, *args]


def snakemake(*args: str, workdir: Path | None = None, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run the workflow (``--directory workdir``) and capture its output."""
    return subprocess.run(snakemake_command(*args, workdir=workdir), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=snakemake_env())


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


# ------------------------------------------------------------------ tiny models shared by the unit tests
# Built once per test process. Treat them as read-only: a test that changes a model or tokenizer works on a
# ``copy.deepcopy`` of it, and a test that trains or writes uses its own tmp_path for the outputs (the saved
# directories are checked unchanged at the end of the session).


def _digests(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The byte-level BPE tokenizer of ``mva_core.tiny`` (built-in corpus, chat template)."""
    from mva_core.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer):
    """The tiny random Llama (seed 0) for ``tiny_tokenizer``, in eval mode."""
    import torch

    from mva_core.tiny import build_tiny_llama

    model = build_tiny_llama(tiny_tokenizer).eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    yield model
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items()), (
        "a test changed the shared tiny_llama (work on a copy.deepcopy of it)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer, tiny_llama):
    """``tiny_llama`` and ``tiny_tokenizer`` saved as a model directory (an SFT or base model of the pipeline)."""
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_llama.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    before = _digests(folder)
    yield folder
    assert _digests(folder) == before, f"a test changed the shared {folder}"


@pytest.fixture(scope="session")
def random_adapters(tmp_path_factory, tiny_llama):
    """Two saved random LoRA value vectors of ``tiny_llama`` (``synthetic.value_adapter_configs``): 'care' (r 4 on
    q, v, down) and 'safe' (rsLoRA r 2 on q, k, o, gate, up); B is non-zero, so each changes the model."""
    from synthetic import save_random_adapters, value_adapter_configs

    root = tmp_path_factory.mktemp("random_adapters")
    adapters = save_random_adapters(tiny_llama, value_adapter_configs(), root)
    before = _digests(root)
    yield adapters
    assert _digests(root) == before, f"a test changed the shared {root}"


def run_cli(main, capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` of a console script: (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
