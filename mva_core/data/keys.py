"""Stable keys of prompts and pairs: canonical prompt text, prompt ids, split keys and seeded hashes."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

Messages = list[dict[str, str]]


def prompt_text(messages: Sequence[Mapping[str, str]]) -> str:
    """Canonical flat rendering of chat messages ("role: content" lines), used for hashing and dedup."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def prompt_id(messages: Sequence[Mapping[str, str]]) -> str:
    """Stable id of a prompt: 16 hex digits of the sha256 of its canonical text."""
    return digest(prompt_text(messages))


def conversation_key(messages: Sequence[Mapping[str, str]]) -> str:
    """The split key of a prompt: its first user turn, case- and whitespace-normalised.

    Multi-turn and last-turn variants of one conversation (e.g. HH test transcripts and the lossy last-turn
    derivative) share their opening question, so keying on it keeps them in the same split.
    """
    first = next((m["content"] for m in messages if m["role"] == "user"), "")
    return " ".join(first.lower().split())


def digest(*parts: str) -> str:
    """16 hex digits of the sha256 of ``parts`` joined by a unit separator."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def unit_interval(text: str) -> float:
    """A uniform-looking number in [0, 1) determined by ``text``."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], 16) / 2**64
