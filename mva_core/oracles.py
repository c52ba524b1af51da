"""Verifiable values: deterministic oracle scorers of a response, preference pairs built from them, and an
evaluator that uses them (``reward_model: {source: oracle, scorer: <name>}``), so evaluation has no evaluator noise.

| scorer | score of a response | from |
|---|---|---|
| ``conciseness`` | − number of words (whitespace-separated) | a transparent formula |
| ``positivity`` | VADER compound sentiment in [−1, 1] (saturates, grows with length) | package ``vadersentiment`` (Hutto & Gilbert 2014) |
| ``positive_share`` | VADER share of positive minus share of negative words in [−1, 1] (length-normalised) | package ``vadersentiment`` |
| ``inoffensiveness`` | 1 − offensive-language probability | ``alt-profanity-check`` (linear model, human-labelled comments) |
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def _conciseness(responses: Sequence[str]) -> np.ndarray:
    return -np.array([len(text.split()) for text in responses], dtype=float)


@functools.lru_cache(maxsize=1)
def _vader_analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _vader(responses: Sequence[str], score: Callable[[dict], float]) -> np.ndarray:
    analyzer = _vader_analyzer()
    return np.array([score(analyzer.polarity_scores(text)) for text in responses], dtype=float)


def _positivity(responses: Sequence[str]) -> np.ndarray:
    return _vader(responses, lambda polarity: polarity["compound"])


def _positive_share(responses: Sequence[str]) -> np.ndarray:
    return _vader(responses, lambda polarity: polarity["pos"] - polarity["neg"])


def _inoffensiveness(responses: Sequence[str]) -> np.ndarray:
    import warnings

    from profanity_check import predict_prob

    if not responses:
        return np.zeros(0)
    with warnings.catch_warnings():  # the package's pickled scikit-learn model warns about version skew
        warnings.simplefilter("ignore")
        return 1.0 - np.asarray(predict_prob(list(responses)), dtype=float)


ORACLES: dict[str, Callable[[Sequence[str]], np.ndarray]] = {
    "conciseness": _conciseness,
    "positivity": _positivity,
    "positive_share": _positive_share,
    "inoffensiveness": _inoffensiveness,
}


def oracle_scores(scorer: str, responses: Sequence[str]) -> np.ndarray:
    """Scores of ``responses`` by the named oracle (higher is better)."""
    if scorer not in ORACLES:
        raise ValueError(f"oracle scorer {scorer!r} is not one of {sorted(ORACLES)}")
    return ORACLES[scorer]([str(text) for text in responses])


@dataclass(frozen=True)
class OracleDerivation:
    """``derive: {scorer, margin, max_length_ratio}`` on a source: the reply the oracle scores higher is chosen;
    pairs whose scores differ by less than ``margin`` are dropped (reason ``oracle_margin``). With
    ``max_length_ratio`` r, pairs whose longer reply has more than r times the words of the shorter one are dropped
    too (reason ``length_confound``): the kept pairs are length-matched, so a value that goes with length (VADER
    sentiment does) is learnt neither as "write more" nor, with a one-sided filter, as "write less"."""

    scorer: str
    margin: float = 0.0
    max_length_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.scorer not in ORACLES:
            raise ValueError(f"derive.scorer {self.scorer!r} is not one of {sorted(ORACLES)}")
        if not np.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"derive.margin must be a finite number >= 0, got {self.margin!r}")
        ratio = self.max_length_ratio
        if ratio is not None and not (np.isfinite(ratio) and ratio >= 1):
            raise ValueError(f"derive.max_length_ratio must be a finite number >= 1, got {ratio!r}")

    @property
    def label(self) -> str:
        ratio = "" if self.max_length_ratio is None else f",len<={self.max_length_ratio:g}"
        return f"{self.scorer}>{self.margin:g}{ratio}"


def derive_oracle_preference(pairs: pd.DataFrame, derivation: OracleDerivation) -> tuple[pd.DataFrame, dict[str, int]]:
    """Relabel ``pairs`` by the oracle; returns the kept pairs and the number dropped per reason: ``oracle_margin``
    (ties and near-ties) and ``length_confound`` (replies of too different lengths; 0 without max_length_ratio)."""
    chosen = oracle_scores(derivation.scorer, pairs["chosen"].tolist())
    rejected = oracle_scores(derivation.scorer, pairs["rejected"].tolist())
    gap = chosen - rejected
    keep = np.abs(gap) >= max(derivation.margin, np.finfo(float).tiny)  # a tie never carries a preference
    kept = pairs[keep].copy()
    swap = gap[keep] < 0
    kept.loc[kept.index[swap], ["chosen", "rejected"]] = kept.loc[kept.index[swap], ["rejected", "chosen"]].to_numpy()
    drops = {"oracle_margin": int((~keep).sum()), "length_confound": 0}
    if derivation.max_length_ratio is not None:
        words = np.stack([-_conciseness(kept[side].tolist()) for side in ("chosen", "rejected")])
        balanced = words.max(axis=0) <= derivation.max_length_ratio * words.min(axis=0)
        drops["length_confound"] = int((~balanced).sum())
        kept = kept[balanced]
    return kept.reset_index(drop=True), drops


@dataclass(frozen=True)
class OracleScorer:
    """An evaluator with the interface of ``reward_models.RewardScorer``: the oracle, no model."""

    scorer: str

    @property
    def name(self) -> str:
        return f"oracle:{self.scorer}"

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        return oracle_scores(self.scorer, responses)

    def describe(self) -> Mapping[str, Any]:
        return {"model": self.name, "input_format": "response", "dtype": "float64", "batch_size": 0, "max_length": 0}
