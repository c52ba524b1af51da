"""TRL's RewardTrainer with a NaN/inf guard that names the step and the batch's pair ids."""
from __future__ import annotations

from typing import Any

from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from mva_core.training.guards import check_finite


class PairIdCollator(DataCollatorForPreference):
    """TRL's reward-model collator, plus a pass-through ``pair_id`` list."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if "pair_id" in examples[0]:
            batch["pair_id"] = [example["pair_id"] for example in examples]
        return batch


class CheckedRewardTrainer(RewardTrainer):
    """Raises NonFiniteLossError (step + pair ids) as soon as the reward-model loss is NaN or infinite."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.data_collator = PairIdCollator(pad_token_id=self.processing_class.pad_token_id)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "pair_id" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "pair_id"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pair_ids = inputs.pop("pair_id", None)
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        check_finite("reward-model loss", result[0] if return_outputs else result, self.state.global_step + 1, pair_ids)
        return result
