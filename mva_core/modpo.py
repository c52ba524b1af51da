"""MODPO (Zhou et al. 2023, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference
Optimization", arXiv 2310.03708) as a baseline, with the other values' implicit DPO rewards as the margin.

For a weighting w, MODPO trains one policy on the target value's preference pairs (y_w ≻ y_l) with

    L = -log σ( (β / w_t) · [ (log π/π_ref)(y_w) − (log π/π_ref)(y_l) ]  −  (1 / w_t) · Σ_{j≠t} w_j · Δr_j ),
    Δr_j = r_j(x, y_w) − r_j(x, y_l),   r_j(x, y) = β · log π_j(y|x) / π_ref(y|x),

where π_j = SFT + θ_j is value j's (penalty-free) value vector, i.e. its DPO implicit reward model, as in the
MODPO authors' code. Rewriting the argument as (β / w_t) · [ (log π(y_w) − (log π_ref(y_w) + M/β)) − (log π/π_ref)(y_l) ]
with M = Σ_j w_j Δr_j shows MODPO is DPO with β' = β / w_t and the chosen reply's reference log-prob raised by
M / β, which is how it is implemented here: on top of TRL's precomputed reference log-probs.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from peft import PeftModel
from torch.utils.data import DataLoader

from mva_core.dpo_trainer import DecorrelatedDPOTrainer


def sequence_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log-probs of the completion tokens of each row of a TRL preference batch ([chosen; rejected])."""
    ids = batch["input_ids"].to(model.device)
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(model.device)).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token_logps * batch["completion_mask"][:, 1:].to(model.device)).sum(-1)


@torch.no_grad()
def implicit_reward_margins(model: PeftModel, loader: DataLoader, weights: Mapping[str, float], beta: float) -> torch.Tensor:
    """M = Σ_j w_j · β · [(log π_j − log π_ref)(y_w) − (log π_j − log π_ref)(y_l)] for every pair of ``loader``.

    ``model`` holds each value vector j as a (frozen) adapter named j; π_ref is the model with adapters disabled.
    """
    active = model.active_adapter
    margins = []
    for batch in loader:
        with model.disable_adapter():
            ref = sequence_logps(model, batch)
        total = torch.zeros(ref.shape[0] // 2, device=ref.device)
        for value, weight in weights.items():
            model.set_adapter(value)
            chosen, rejected = (sequence_logps(model, batch) - ref).chunk(2)
            total += weight * beta * (chosen - rejected)
        margins.append(total.cpu())
    model.set_adapter(active)
    return torch.cat(margins)


class MODPOTrainer(DecorrelatedDPOTrainer):
    """DPO trainer whose precomputed reference log-probs carry the MODPO margin (see the module docstring).

    Construct it with ``args.beta`` = β / w_t and ``args.precompute_ref_log_probs=True``; ``margin_weights`` maps
    each other value (loaded as a frozen adapter of that name) to its weight w_j, ``beta`` is the β of r_j.
    """

    def __init__(self, model: PeftModel, *args, margin_weights: Mapping[str, float], beta: float, **kwargs):
        super().__init__(model, *args, **kwargs)
        if not self.args.precompute_ref_log_probs:
            raise ValueError("MODPO needs dpo.precompute_ref_log_probs: the margin is added to precomputed log-probs")
        loader = DataLoader(self.train_dataset, batch_size=self.args.per_device_train_batch_size,
                            collate_fn=self.data_collator, shuffle=False)
        model.eval()
        shift = (implicit_reward_margins(model, loader, margin_weights, beta) / beta).tolist()
        model.train()
        self._train_only_trained_adapter(model)
        self.train_dataset = self.train_dataset.map(
            lambda row, index: {"ref_chosen_logps": row["ref_chosen_logps"] + shift[index]}, with_indices=True
        )
        self.modpo_margins = shift
