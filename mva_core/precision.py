"""One compute-dtype policy for every stage (``compute.dtype``): bf16 where the hardware runs it fast, fp32 else;
and the device a job computes on (``compute.device``), checked at job start.

``auto`` picks bf16 on CUDA devices that support it and on CPUs with AMX or AVX512-BF16 instructions, fp32
otherwise: without those instructions bf16 matrix products are emulated and run tens of times slower than fp32
(measured in benchmarks/dtype.py). Training keeps trainable LoRA weights, optimizer state, losses and the
decorrelation penalty in fp32 and runs the model's forward under bf16 autocast; inference (reference log-probs,
generation, scoring) loads weights in the chosen dtype.

A GPU stage that asked for a GPU (``compute.gpus_per_job > 0``, or ``compute.device: cuda``) and finds none stops
at once (:func:`require_gpu`) instead of running a 7B job on the CPU until its time limit; ``compute.device: cpu``
computes on the CPU even where a GPU is visible.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

CHOICES = ("auto", "float32", "bfloat16")
ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2")  # compute.attn_implementation
DEVICES = ("auto", "cpu", "cuda")  # compute.device


class GPUUnavailableError(RuntimeError):
    """A job that must compute on a CUDA GPU found none."""


@dataclass(frozen=True)
class Precision:
    """Where and in which dtype a stage computes, and why; ``attn_implementation`` is the attention kernel of the
    policy model (None: transformers' default, SDPA)."""

    device: str
    dtype: str
    reason: str
    attn_implementation: str | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    def model_kwargs(self, dtype: torch.dtype | None = None) -> dict:
        """``from_pretrained`` keyword arguments of a policy model: weights in ``dtype`` (default: this precision's
        dtype) and the attention kernel when one is set."""
        kwargs: dict[str, Any] = {"dtype": dtype or self.torch_dtype}
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs

    def trainer_kwargs(self) -> dict:
        """TrainingArguments for a Hugging Face / TRL trainer: device and bf16 / fp16 mixed precision."""
        return {"use_cpu": self.device == "cpu", "bf16": self.bf16, "fp16": self.dtype == "float16"}

    def full_precision(self) -> contextlib.AbstractContextManager:
        """A block computed in fp32 even inside the trainer's autocast (losses, penalties)."""
        return torch.autocast(device_type=self.device, enabled=False)

    def describe(self) -> dict:
        return {"device": self.device, "processor": processor_name(self.device), "dtype": self.dtype,
                "reason": self.reason, "attn_implementation": self.attn_implementation or "auto"}


def processor_name(device: str) -> str:
    """The GPU's or CPU's model name, recorded beside every timing (CPUs differ between machines)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    except OSError:
        names = []
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{names[0]}, {usable} of {len(names)} logical cores usable" if names
            else platform.processor() or "unknown CPU")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX tiles or AVX512-BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def cuda_has_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def this_device(device: str = "auto") -> str:
    """Where a stage computes for ``compute.device``: the CPU when it is ``cpu``, else the first GPU when there is
    one (a job that needs one was checked at start by :func:`require_gpu`), else the CPU."""
    if device not in DEVICES:
        raise ValueError(f"compute.device {device!r}: expected one of {DEVICES}")
    return "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"


def gpu_required(device: str, gpus_requested: int | None) -> bool:
    """Whether a job must find a CUDA GPU: it is a GPU stage (``gpus_requested``, its ``gpu`` resource, is not None)
    and either ``compute.device`` is ``cuda`` or it is ``auto`` and the job asked the scheduler for GPUs."""
    if device not in DEVICES:
        raise ValueError(f"compute.device {device!r}: expected one of {DEVICES}")
    return gpus_requested is not None and (device == "cuda" or (device == "auto" and gpus_requested > 0))


def cuda_view() -> str:
    """What torch sees of CUDA on this machine, for messages."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"torch.cuda.is_available() = {torch.cuda.is_available()}, torch.cuda.device_count() = "
            f"{torch.cuda.device_count()}, CUDA_VISIBLE_DEVICES = {'unset' if visible is None else repr(visible)}; "
            f"torch {torch.__version__} is {build}")


def require_gpu(job: str, reason: str) -> None:
    """Raise GPUUnavailableError naming ``job``, the node and :func:`cuda_view` unless torch sees a CUDA GPU."""
    if torch.cuda.is_available():
        return
    slurm_job = os.environ.get("SLURM_JOB_ID")
    node = socket.gethostname() + (f" (Slurm job {slurm_job})" if slurm_job else "")
    raise GPUUnavailableError(
        f"{job} needs a CUDA GPU ({reason}) but torch sees none on node {node}: {cuda_view()}. Stopped before "
        "loading any model. Run it where a GPU is visible (GPU partition, --gpus/--gres: docs/cluster.md), install "
        "the CUDA build of torch (envs/mva-cuda.yaml), or compute on CPUs with compute: {device: cpu, gpus_per_job: 0}.")


def fixed_precision(dtype: str, reason: str, device: str = "auto") -> Precision:
    """``dtype`` (a stage's own setting, e.g. ``reward_model.dtype``) on this machine's device."""
    return Precision(this_device(device), dtype, reason)


def resolve_precision(requested: str = "auto", device: str = "auto") -> Precision:
    """The policy for ``compute.dtype`` on this machine (device: :func:`this_device` of ``compute.device``)."""
    if requested not in CHOICES:
        raise ValueError(f"compute.dtype {requested!r}: expected one of {CHOICES}")
    if requested != "auto":
        return fixed_precision(requested, f"compute.dtype: {requested}", device)
    if this_device(device) == "cuda":
        fast = cuda_has_bf16()
        reason = f"auto: CUDA device {'supports' if fast else 'lacks'} bf16"
    else:
        fast = cpu_has_fast_bf16()
        reason = f"auto: CPU {'has' if fast else 'lacks'} AMX / AVX512-BF16"
    return Precision(this_device(device), "bfloat16" if fast else "float32", reason)


def job_precision(config: Mapping[str, Any], override: str | None = None) -> Precision:
    """A workflow job's precision: a stage's own dtype setting (``override``, e.g. ``reward_model.dtype``) when set,
    else the ``compute.dtype`` policy of the run's config, resolved on the machine the job runs on; the attention
    kernel from ``compute.attn_implementation``."""
    compute = config.get("compute", {})
    attention = compute.get("attn_implementation", "auto")
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"compute.attn_implementation {attention!r}: expected one of {ATTENTION_CHOICES}")
    device = compute.get("device", "auto")
    if override is not None:
        precision = fixed_precision(override, f"stage setting: {override}", device)
    else:
        precision = resolve_precision(compute.get("dtype", "auto"), device)
    return dataclasses.replace(precision, attn_implementation=None if attention == "auto" else attention)


def with_job_dtype(section: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """A config section (``base_model``, a ``reward_model``) with its null ``dtype`` set by :func:`job_precision`."""
    return {**section, "dtype": job_precision(config, section.get("dtype")).dtype}
