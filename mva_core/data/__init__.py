"""Preference-data layer: read pairs and evaluation prompts, normalise them to chat messages, split by prompt.

Modules, in dependency order: ``errors`` and ``keys`` (ids and hashes); ``formats`` (the row formats);
``derived`` (preferences derived by a rule or an oracle); ``sources`` (SourceSpec, local files or hub ids, their
records); ``records`` (row-by-row parsing with drop accounting); ``pairs`` and ``prompts`` (one source's pairs or
prompts; the evaluation prompt table); ``splits``; ``preparation`` (a value's cleaned, split, capped data).
"""
from mva_core.data.derived import derive_shorter_preference
from mva_core.data.errors import DataError
from mva_core.data.formats import FORMATS, PKU_VIEWS
from mva_core.data.keys import conversation_key, prompt_id, prompt_text
from mva_core.data.pairs import DROP_REASONS, load_pairs
from mva_core.data.preparation import PreparedValueData, prepare_value_data
from mva_core.data.prompts import (
    ON_LONG_PROMPT,
    PROMPT_DROP_REASONS,
    ContextBudget,
    PromptSet,
    evaluation_prompts,
    load_prompt_set,
    load_prompts,
    prompt_words,
    sample_prompts,
)
from mva_core.data.records import ON_BAD_ROW
from mva_core.data.sources import SourceSpec, resolve_source
from mva_core.data.splits import split_by_prompt

__all__ = [
    "DROP_REASONS", "FORMATS", "ON_BAD_ROW", "ON_LONG_PROMPT", "PKU_VIEWS", "PROMPT_DROP_REASONS", "ContextBudget",
    "DataError", "PreparedValueData",
    "PromptSet", "SourceSpec", "conversation_key", "derive_shorter_preference", "evaluation_prompts", "load_pairs",
    "load_prompt_set", "load_prompts", "prepare_value_data", "prompt_id", "prompt_text", "prompt_words",
    "resolve_source", "sample_prompts", "split_by_prompt",
]
