"""Reward models: train one per value (TRL ``RewardTrainer``) or load a published one, and score generations.

One encoding function (:func:`encode_rm_inputs`) turns (prompt messages, response) into token ids for both training
and scoring, so a trained reward model is always scored on exactly the inputs it was trained on. The prompt appears
once in every input (the released MVA code fed it twice). Scoring is batched with a fixed batch size and dtype, right
padded with ``pad_token_id`` set (sequence-classification heads read the last non-pad token, so this also holds when
pad == eos), and sorted by length; :meth:`RewardScorer.describe` records those settings next to the scores, since
reward-model scores move with batch size and dtype (anchors.md §3.3).
"""
from mva_core.reward_models.inputs import encode_rm_inputs, format_rm_inputs, hh_transcript
from mva_core.reward_models.scoring import NonFiniteRewardError, RewardScorer, pairwise_accuracy, score_generations
from mva_core.reward_models.settings import DTYPES, INPUT_FORMATS, RewardModelSettings
from mva_core.reward_models.training import train_reward_model

__all__ = [
    "DTYPES", "INPUT_FORMATS", "NonFiniteRewardError", "RewardModelSettings", "RewardScorer", "encode_rm_inputs",
    "format_rm_inputs", "hh_transcript", "pairwise_accuracy", "score_generations", "train_reward_model",
]
