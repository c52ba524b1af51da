"""The loss guard every trainer runs: stop at the first NaN or infinite loss, naming the step and the pairs."""
from __future__ import annotations

from typing import Any

import torch


class NonFiniteLossError(RuntimeError):
    """A training loss (or one of its terms) became NaN or infinite; no artifact is written from such a run."""


def check_finite(label: str, loss: torch.Tensor, step: int, batch_ids: Any) -> None:
    """Raise NonFiniteLossError naming ``label``, the global ``step`` and the batch's pair ids if the scalar ``loss``
    is NaN or infinite."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{label} is {loss.item()} at global step {step} "
                                 f"(pair ids: {batch_ids if batch_ids is not None else 'unavailable'})")
