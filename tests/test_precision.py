"""The compute-dtype policy: auto-detection, its fp32 fallback, and a bf16 training run with fp32 LoRA weights."""
from __future__ import annotations

import json
import os
import platform

import pytest
import torch
from safetensors.torch import load_file

from mva_core import precision
from mva_core.precision import job_precision, processor_name, resolve_precision, with_job_dtype


@pytest.mark.parametrize("fast,expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_follows_the_cpu_capability(monkeypatch, fast, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    chosen = resolve_precision("auto")
    assert (chosen.device, chosen.dtype) == ("cpu", expected)
    assert ("has" if fast else "lacks") in chosen.reason
    assert chosen.trainer_kwargs() == {"use_cpu": True, "bf16": fast, "fp16": False}


def test_explicit_choices_overrides_and_bad_values(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("bfloat16").torch_dtype == torch.bfloat16
    assert job_precision({"compute": {"dtype": "float32"}}).dtype == "float32"
    half = job_precision({"compute": {"dtype": "bfloat16"}}, override="float16")
    assert half.dtype == "float16" and half.trainer_kwargs() == {"use_cpu": True, "bf16": False, "fp16": True}
    assert with_job_dtype({"dtype": None, "batch_size": 4}, {"compute": {"dtype": "bfloat16"}}) == {
        "dtype": "bfloat16", "batch_size": 4}
    with pytest.raises(ValueError, match="compute.dtype"):
        resolve_precision("float64")


def test_penalty_block_runs_in_fp32_inside_autocast():
    chosen = resolve_precision("bfloat16")
    a = torch.randn(8, 8)
    with torch.autocast(device_type=chosen.device, dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with chosen.full_precision():
            assert (a @ a).dtype == torch.float32


def test_bf16_value_vector_keeps_fp32_lora_weights(tmp_path, tiny_model_dir):
    import pandas as pd

    from mva_core.penalties import PenaltySettings
    from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

    pairs = pd.DataFrame({"pair_id": [f"p{i}" for i in range(4)],
                          "prompt": [[{"role": "user", "content": f"Add {i} and {i}."}] for i in range(4)],
                          "chosen": [f"{2 * i}" for i in range(4)], "rejected": ["no"] * 4})
    out = train_value_vector(tiny_model_dir, pairs, tmp_path / "vector", frozen_vectors={},
                             lora=LoraSettings(r=2, alpha=4), dpo=DPOSettings(batch_size=4, max_length=32),
                             penalty=PenaltySettings(), checkpoint_dir=tmp_path / "ckpt", threads=1,
                             precision=resolve_precision("bfloat16"))
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float32 and t.isfinite().all() for t in weights.values())
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["precision"]["dtype"] == "bfloat16"
    assert pd.read_parquet(out / "training_log.parquet")["dpo_loss"].notna().all()


def test_attention_kernel_reaches_the_loaded_policy(monkeypatch, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "attn_implementation" not in job_precision({"compute": {"dtype": "float32"}}).model_kwargs()
    eager = job_precision({"compute": {"dtype": "float32", "attn_implementation": "eager"}})
    assert eager.describe()["attn_implementation"] == "eager"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **eager.model_kwargs())
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="compute.attn_implementation"):
        job_precision({"compute": {"attn_implementation": "flash"}})


def fake_job(tmp_path, gpu: int | None, device: str = "auto"):
    """The ``snakemake`` object a workflow script gets, for rule generate of method mva and seed 60; its input is a
    model directory that does not exist, so a job that got past the device check would fail on reading it."""
    from types import SimpleNamespace

    from snakemake.iocontainers import ResourceList, Wildcards

    resources = {"_cores": 1, "mem_mb": 1000} | ({} if gpu is None else {"gpu": gpu})
    return SimpleNamespace(rule="generate", wildcards=Wildcards(fromdict={"method": "mva", "seed": "60"}),
                           resources=ResourceList(fromdict=resources), log=[str(tmp_path / "generate.log")],
                           input=[str(tmp_path / "models/base")], params={},
                           config={"compute": {"device": device, "gpus_per_job": gpu or 0, "dtype": "auto"}})


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")


@pytest.mark.parametrize("device,gpu,reason", [("auto", 1, "compute.gpus_per_job: 1"), ("cuda", 0, "compute.device: cuda")])
def test_a_gpu_job_without_a_visible_gpu_stops_at_start_naming_job_node_and_what_torch_sees(tmp_path, no_cuda, device,
                                                                                          gpu, reason):
    import socket

    from mva_core.precision import GPUUnavailableError
    from mva_core.workflow_io import logged_job

    entered = False
    with pytest.raises(GPUUnavailableError) as failure:
        with logged_job(fake_job(tmp_path, gpu, device)):
            entered = True
    message = str(failure.value)
    assert not entered  # nothing of the job ran: no input was read (it does not exist) and no model loaded
    assert message.startswith(f"rule generate (method=mva, seed=60) needs a CUDA GPU ({reason}) but torch sees none "
                              f"on node {socket.gethostname()}: ")
    assert ("torch.cuda.is_available() = False, torch.cuda.device_count() = 0, CUDA_VISIBLE_DEVICES = '0'; "
            f"torch {torch.__version__} is ") in message
    assert "compute: {device: cpu, gpus_per_job: 0}" in message
    assert message in (tmp_path / "generate.log").read_text()  # the job's log, shown by Snakemake on failure


@pytest.mark.parametrize("gpu,device", [(0, "auto"), (None, "cuda")])
def test_jobs_that_need_no_gpu_start_without_one(tmp_path, no_cuda, gpu, device):
    """A GPU stage of a CPU run (gpus_per_job 0) and a stage without a gpu resource (data, figures) get past the
    check: the job then fails on its missing input, not on the device."""
    from mva_core.workflow_io import logged_job

    with pytest.raises(Exception) as failure, logged_job(fake_job(tmp_path, gpu, device)):
        pass
    assert "CUDA GPU" not in str(failure.value) and "models/base" in str(failure.value)


def test_device_cpu_computes_on_the_cpu_where_a_gpu_is_visible(tmp_path, monkeypatch):
    from mva_core.workflow_io import check_job_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    job = fake_job(tmp_path, 0, "cpu")
    check_job_device(job)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # hidden from every library the job uses
    chosen = job_precision(job.config)
    assert (chosen.device, chosen.dtype) == ("cpu", "float32") and chosen.trainer_kwargs()["use_cpu"]
    assert job_precision({"compute": {"device": "auto", "dtype": "float32"}}).device == "cuda"


def test_describe_names_the_processor_beside_the_dtype(monkeypatch):
    """Timings are recorded with the CPU model (CPUs differ between machines); without /proc/cpuinfo, the platform's."""
    record = resolve_precision("float32", "cpu").describe()
    assert record["dtype"] == "float32" and record["processor"]
    if os.path.isfile("/proc/cpuinfo"):
        assert record["processor"].endswith(f"of {os.cpu_count()} logical cores usable")

    def no_cpuinfo(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr("builtins.open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    assert processor_name("cpu") == "arm"
