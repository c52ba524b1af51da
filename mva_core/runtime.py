"""Device, thread and checkpoint helpers shared by the training stages."""
from __future__ import annotations

import re
from pathlib import Path

import torch


def has_cuda() -> bool:
    """Whether a CUDA device is usable."""
    return torch.cuda.is_available()


def training_device_kwargs() -> dict:
    """TrainingArguments that select the device: bf16 on a GPU, fp32 on the CPU."""
    if has_cuda():
        return {"bf16": True}
    return {"use_cpu": True}


def latest_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """Path of the newest ``checkpoint-<step>`` in ``checkpoint_dir`` (to resume a killed run), or None."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()
    ]
    return str(max(steps)[1]) if steps else None


def inference_device_and_dtype() -> tuple[str, torch.dtype]:
    """Where and in which dtype to run generation: bf16 on a GPU, fp32 on the CPU."""
    if has_cuda():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32
