"""Row formats of preference data, as a registry ``ROW_FORMATS`` (name -> parser), and the field checks they share.

* ``hh``: ``{chosen, rejected}`` full Anthropic transcripts (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``);
* ``pku``: ``{prompt, response_0, response_1, better_response_id, safer_response_id}`` (needs a view);
* ``pairs``: ``{prompt, chosen, rejected}``, prompt a string or a list of ``{role, content}`` messages;
* ``prompt_response``: ``{prompt, response: [preferred, other]}``.

All texts are stripped of surrounding whitespace. A parser raises RowError for a malformed row and RowDropped for
a row that carries no pair.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mva_core.data.errors import DataError, RowDropped, RowError
from mva_core.data.keys import Messages

PKU_VIEWS = {"better": "better_response_id", "safer": "safer_response_id"}

_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Pair:
    """One parsed preference pair."""

    prompt: Messages
    chosen: str
    rejected: str


PairParser = Callable[[Mapping[str, Any]], Pair]


# ---------------------------------------------------------------- field helpers


def _string(row: Mapping[str, Any], field: str) -> str:
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__}")
    return value.strip()


def parse_messages(value: Any, field: str) -> Messages:
    """A prompt given as a string (one user message) or as a list of ``{role, content}`` messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value.strip()}]
    if not isinstance(value, (list, tuple)):
        raise RowError(field, f"expected a string or a list of messages, got {type(value).__name__}")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise RowError(field, f"message {index} is {type(message).__name__}, not an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise RowError(field, f"message {index} has no string {key!r}")
        messages.append({"role": message["role"], "content": message["content"].strip()})
    if messages and messages[-1]["role"] != "user":
        raise RowError(field, f"the last message is from {messages[-1]['role']!r}, not 'user'")
    return messages


def _prompt(row: Mapping[str, Any]) -> Messages:
    if "prompt" not in row:
        raise RowError("prompt", "missing")
    return parse_messages(row["prompt"], "prompt")


def _choice(row: Mapping[str, Any], field: str) -> int:
    value = row.get(field)
    if isinstance(value, bool) or value not in (0, 1):
        raise RowError(field, f"expected 0 or 1, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- parsers


def _hh_turns(text: str, field: str) -> Messages:
    parts = _HH_MARKER.split(text)
    if parts[0].strip():
        raise RowError(field, "text before the first 'Human:'/'Assistant:' turn")
    return [{"role": _HH_ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _hh_split(text: str, field: str) -> tuple[Messages, str]:
    """Split a transcript into (dialogue before the final Assistant turn, final reply)."""
    text = text.lstrip()
    finals = [m for m in _HH_MARKER.finditer(text) if m.group(1) == "Assistant"]
    if not finals:
        raise RowError(field, "transcript has no 'Assistant:' turn")
    return _hh_turns(text[: finals[-1].start()], field), text[finals[-1].end():].strip()


def _parse_hh(row: Mapping[str, Any]) -> Pair:
    prompt, chosen = _hh_split(_string(row, "chosen"), "chosen")
    other, rejected = _hh_split(_string(row, "rejected"), "rejected")
    if prompt != other:
        raise RowDropped("prompt_mismatch")
    if prompt and prompt[-1]["role"] != "user":
        raise RowError("chosen", "the turn before the final Assistant turn is not a Human turn")
    return Pair(prompt, chosen, rejected)


def _parse_pairs(row: Mapping[str, Any]) -> Pair:
    return Pair(_prompt(row), _string(row, "chosen"), _string(row, "rejected"))


def _parse_prompt_response(row: Mapping[str, Any]) -> Pair:
    prompt = _prompt(row)
    response = row.get("response")
    if not isinstance(response, (list, tuple)) or len(response) != 2 or not all(isinstance(r, str) for r in response):
        raise RowError("response", f"expected a list of two strings [preferred, other], got {response!r:.80}")
    return Pair(prompt, response[0].strip(), response[1].strip())


def _pku_parser(view: str | None) -> PairParser:
    def parse(row: Mapping[str, Any]) -> Pair:
        prompt = _string(row, "prompt")
        responses = (_string(row, "response_0"), _string(row, "response_1"))
        best = _choice(row, PKU_VIEWS[view])
        return Pair([{"role": "user", "content": prompt}], responses[best], responses[1 - best])

    return parse


ROW_FORMATS: dict[str, Callable[[str | None], PairParser]] = {
    "hh": lambda view: _parse_hh,
    "pku": _pku_parser,
    "pairs": lambda view: _parse_pairs,
    "prompt_response": lambda view: _parse_prompt_response,
}
"""Format name -> the parser of its rows for a view (``view`` picks the PKU label; the other formats have none)."""

FORMATS = ("auto", *ROW_FORMATS)


def _detect_format(keys: set[str]) -> str | None:
    if {"prompt", "response_0", "response_1"} <= keys:
        return "pku"
    if {"prompt", "response"} <= keys:
        return "prompt_response"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "pairs"
    if {"chosen", "rejected"} <= keys:
        return "hh"
    return None


def pair_parser(row_format: str, view: str | None, first: Mapping[str, Any], where: str, pos: str) -> PairParser:
    """The parser for a source's rows: of ``row_format``, or (``"auto"``) the one detected from the keys of the first
    row ``first``, found at ``pos`` of ``where``; raises DataError if none fits or ``view`` does not."""
    fmt = row_format if row_format != "auto" else _detect_format(set(first))
    if fmt is None:
        raise DataError(f"{where}: cannot detect the row format from the keys of {pos} ({', '.join(sorted(first))}); "
                        f"set format to one of {'|'.join(FORMATS[1:])}")
    if fmt == "pku" and view is None:
        raise DataError(f"{where}: PKU rows need view='better' (helpfulness) or view='safer' (harmlessness)")
    if fmt != "pku" and view is not None:
        raise DataError(f"{where}: view={view!r} applies only to pku rows, but the rows are {fmt!r}")
    return ROW_FORMATS[fmt](view)
