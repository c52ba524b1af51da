"""Prompts: loading prompt sources (rows with a prompt and an optional category) and building the evaluation
prompt table every model answers, from the values' eval splits and the prompt sources (``evaluation.*``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mva_core.contracts import EVALUATION_PROMPTS
from mva_core.data.errors import DataError, RowDropped, RowError
from mva_core.data.formats import parse_messages
from mva_core.data.keys import Messages, prompt_id, prompt_text
from mva_core.data.records import collect_rows
from mva_core.data.sources import SourceSpec, as_spec

PROMPT_DROP_REASONS = ("malformed", "empty", "duplicate")
PROMPT_COLUMNS = ["prompt_id", "prompt", "category", "source"]
ON_LONG_PROMPT = ("drop", "fail")


@dataclass(frozen=True)
class ContextBudget:
    """The policy's context: a prompt of ``tokens(messages)`` tokens (rendered as generation renders it) fits if it
    leaves ``max_new_tokens`` of the ``positions`` for the reply. A prompt that does not fit is skipped
    (``on_long_prompt="drop"``) or stops the run naming it and its length (``"fail"``); it is never truncated."""

    positions: int
    max_new_tokens: int
    tokens: Callable[[Messages], int]
    on_long_prompt: str = "drop"

    def __post_init__(self) -> None:
        if self.on_long_prompt not in ON_LONG_PROMPT:
            raise ValueError(f"on_long_prompt {self.on_long_prompt!r}: expected one of {ON_LONG_PROMPT}")

    @property
    def prompt_tokens(self) -> int:
        """The most tokens a prompt may have."""
        return self.positions - self.max_new_tokens

    def fits(self, messages: Messages, origin: str) -> bool:
        """Whether the prompt fits; raises DataError for one that does not with ``on_long_prompt="fail"``."""
        n = self.tokens(messages)
        if n <= self.prompt_tokens:
            return True
        if self.on_long_prompt == "fail":
            raise DataError(f"evaluation prompt {prompt_id(messages)} (origin {origin!r}) has {n:,} tokens: with "
                            f"evaluation.generation.max_new_tokens {self.max_new_tokens:,} it needs "
                            f"{n + self.max_new_tokens:,} positions, but the policy has {self.positions:,}. Set "
                            "evaluation.on_long_prompt: drop to skip such prompts, skip long ones with "
                            "evaluation.max_prompt_words, or lower max_new_tokens")
        return False

    def describe(self) -> str:
        return (f"the policy's {self.positions:,} positions minus evaluation.generation.max_new_tokens "
                f"{self.max_new_tokens:,}")


def _prompt_row_parser(prompt_field: str, category_field: str | None
                       ) -> Callable[[Mapping[str, Any]], tuple[Messages, str | None]]:
    def parse(row: Mapping[str, Any]) -> tuple[Messages, str | None]:
        if prompt_field not in row:
            raise RowError(prompt_field, "missing")
        messages = parse_messages(row[prompt_field], prompt_field)
        category = row.get(category_field) if category_field else None
        if category is not None and not isinstance(category, str):
            raise RowError(category_field, f"expected a string, got {type(category).__name__}")
        if not messages or not messages[-1]["content"]:
            raise RowDropped("empty")
        return messages, category

    return parse


def load_prompts(source: SourceSpec | str, roots: Sequence[str | Path] = (), on_bad_row: str = "error",
                 prompt_field: str = "prompt", category_field: str | None = "category") -> pd.DataFrame:
    """Evaluation prompts (rows with a prompt and an optional category) as a frame with ``PROMPT_COLUMNS``.

    The prompt is read from ``prompt_field`` (a string becomes one user message, or a list of ``{role, content}``
    messages ending with the user's) and the category, a string or missing, from ``category_field`` (None: no
    categories). Drops (``empty``, ``duplicate`` prompt, ``malformed``) and rows read go in ``attrs`` as for
    ``load_pairs``; a malformed row raises DataError naming the file, row and field unless ``on_bad_row="skip"``.
    """
    spec = as_spec(source)
    parse = _prompt_row_parser(prompt_field, category_field)
    items, drops, rows_read = collect_rows(
        spec, roots, on_bad_row, PROMPT_DROP_REASONS, lambda *_: parse, lambda item: (prompt_text(item[0]),)
    )
    rows = [(prompt_id(messages), messages, category, spec.label) for messages, category in items]
    df = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
    df["category"] = pd.Series([category for _, category in items], index=df.index, dtype=object)  # keep None
    df.attrs.update(drops=drops, rows_read=rows_read)
    return df


@dataclass(frozen=True, eq=False)
class PromptSet:
    """External evaluation prompts: a loaded ``evaluation.prompt_sources`` entry.

    ``prompts`` has the columns of ``mva_core.data.load_prompts`` (``prompt_id``, ``prompt``, ``category``,
    ``source``); ``n`` of them are evaluated (None: all).
    """

    name: str
    prompts: pd.DataFrame
    n: int | None = None


def load_prompt_set(entry: Mapping, roots: Sequence, on_bad_row: str = "error") -> PromptSet:
    """Load one ``evaluation.prompt_sources`` entry from the data roots (then the hub), as ``values.*.sources``."""
    spec = SourceSpec(path=entry["path"], hub_split=entry.get("hub_split", "train"),
                      hub_data_dir=entry.get("hub_data_dir"))
    prompts = load_prompts(spec, roots, on_bad_row, prompt_field=entry.get("prompt_field", "prompt"),
                           category_field=entry.get("category_field", "category"))
    return PromptSet(entry["name"], prompts, entry.get("n"))


def sample_prompts(prompts: pd.DataFrame, n: int | None, seed: int, stratify: str | None = "category") -> pd.DataFrame:
    """``n`` rows drawn without replacement with ``seed``, kept in their original order (all rows if n is None).

    If the ``stratify`` column exists and is not entirely missing, the draw is stratified: each category (missing
    ones form one stratum) gets its share of ``n`` in proportion to its size, leftover places going to the largest
    remainders (ties broken by the seeded draw), and its rows are drawn uniformly within it.
    """
    if n is None or n >= len(prompts):
        if n is not None and n > len(prompts):
            raise ValueError(f"cannot draw {n} prompts from {len(prompts)}")
        return prompts.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    if stratify is None or stratify not in prompts.columns or prompts[stratify].isna().all():
        chosen = rng.choice(len(prompts), size=n, replace=False)
    else:
        labels = prompts[stratify].astype(object).where(prompts[stratify].notna(), "").astype(str).to_numpy()
        strata = sorted(set(labels))
        members = [np.flatnonzero(labels == label) for label in strata]
        quota = [n * len(rows) // len(prompts) for rows in members]
        remainder = [n * len(rows) % len(prompts) for rows in members]
        tiebreak = rng.permutation(len(strata))
        for i in sorted(range(len(strata)), key=lambda i: (-remainder[i], tiebreak[i]))[: n - sum(quota)]:
            quota[i] += 1
        chosen = np.concatenate([rng.choice(rows, size=q, replace=False) for rows, q in zip(members, quota)])
    return prompts.iloc[np.sort(chosen)].reset_index(drop=True)


def prompt_words(messages: Sequence[Mapping[str, str]]) -> int:
    """Whitespace-separated words over all messages of a prompt."""
    return sum(len(str(m["content"]).split()) for m in messages)


def evaluation_prompts(eval_splits: Mapping[str, pd.DataFrame], per_value: int,
                       prompt_sets: Sequence[PromptSet] = (), seed: int = 0,
                       max_words: int | None = None, budget: ContextBudget | None = None) -> pd.DataFrame:
    """The prompts every model answers and every reward model scores: the columns of ``contracts.EVALUATION_PROMPTS``.

    First the first ``per_value`` distinct prompts of each value's eval split (its order is a seeded shuffle;
    none when ``per_value`` is 0), ``origin`` = the value, no ``category``; then, per prompt set, ``n`` prompts
    not taken yet, drawn by ``sample_prompts`` with ``seed`` (stratified over ``category``), ``origin`` = the
    set's name. ``prompt`` holds chat messages. With ``max_words``, prompts of more words (``prompt_words``) are
    skipped everywhere (long multi-turn transcripts dominate generation time on a CPU). With ``budget``, a prompt
    that does not fit the policy's context is skipped (or, with ``on_long_prompt="fail"``, stops the run), never
    truncated; ``attrs["too_long"]`` counts the skipped ones per origin. A shortfall raises DataError.
    """
    short_enough = (lambda m: True) if max_words is None else (lambda m: prompt_words(m) <= max_words)
    too_long: dict[str, int] = {}

    def fits(messages: Messages, origin: str) -> bool:
        if budget is None or budget.fits(messages, origin):
            return True
        too_long[origin] = too_long.get(origin, 0) + 1
        return False

    rows, seen = [], set()
    for value, split in (eval_splits.items() if per_value else ()):
        taken = 0
        for messages in split["prompt"]:
            if taken == per_value:
                break
            pid = prompt_id(messages)
            if pid in seen or not short_enough(messages) or not fits(messages, value):
                continue
            seen.add(pid)
            rows.append({"prompt_id": pid, "prompt": list(messages), "origin": value, "category": None})
            taken += 1
        if taken < per_value:
            raise DataError(
                f"value {value!r}: its eval split has only {taken} distinct prompts"
                + (f" of at most {max_words} words" if max_words is not None else "")
                + (f" that fit {budget.describe()} ({too_long[value]} longer ones skipped)" if too_long.get(value)
                   else "")
                + f" but evaluation.prompts_per_value is {per_value}; lower it or raise data.max_pairs.eval / "
                "data.split.eval" + (" / evaluation.max_prompt_words" if max_words is not None else "")
                + (" / lower evaluation.generation.max_new_tokens" if too_long.get(value) else "")
            )
    for prompt_set in prompt_sets:
        prompts = prompt_set.prompts
        fresh = prompts[~prompts["prompt_id"].isin(seen) & prompts["prompt"].map(short_enough)]
        if budget is not None and budget.on_long_prompt == "drop":
            fresh = fresh[fresh["prompt"].map(lambda messages: fits(messages, prompt_set.name)).astype(bool)]
        if prompt_set.n is not None and prompt_set.n > len(fresh):
            overlap = len(prompts) - len(fresh) - too_long.get(prompt_set.name, 0)
            raise DataError(
                f"evaluation.prompt_sources {prompt_set.name!r}: n is {prompt_set.n} but it has only {len(fresh)} "
                f"distinct prompts" + (f" ({overlap} more are already taken from the eval splits or an earlier source)"
                                        if overlap else "")
                + (f" ({too_long[prompt_set.name]} more do not fit {budget.describe()})"
                   if too_long.get(prompt_set.name) else "") + "; lower n or set it to null (all prompts)"
            )
        sample = sample_prompts(fresh, prompt_set.n, seed)
        for pid, messages, category in zip(sample["prompt_id"], sample["prompt"], sample["category"]):
            if budget is not None and budget.on_long_prompt == "fail":
                budget.fits(messages, prompt_set.name)
            seen.add(pid)
            rows.append({"prompt_id": pid, "prompt": list(messages), "origin": prompt_set.name, "category": category})
    if not rows:
        raise DataError("no evaluation prompts: evaluation.prompts_per_value is 0 and no evaluation.prompt_sources "
                        "are given" if not too_long else f"no evaluation prompt fits {budget.describe()}")
    table = pd.DataFrame(rows, columns=EVALUATION_PROMPTS.column_names)
    table.attrs["too_long"] = too_long
    return table
