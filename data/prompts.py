"""Prompt text hygiene shared by every stage that writes prompts: cleaning, normalising, ids, seed files."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError
from core.text import normalise
from data import sql
from data.store import Store

_PREFIX = re.compile(r"^\s*(?:output|question|prompt|new prompt|rewritten prompt)\s*[:\-]\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


@dataclass(frozen=True)
class SeedPrompt:
    text: str
    category: str


def clean_prompt(text: str, min_chars: int) -> str | None:
    """Strip what attackers wrap prompts in (labels, quotes, control characters); None if too short."""
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = _PREFIX.sub("", text.strip()).strip().strip(_QUOTES).strip()
    text = " ".join(text.split())
    return text if len(text) >= min_chars else None


def stored_keys(store: Store) -> set[str]:
    """The de-duplication keys of every prompt in the store: a new prompt must not normalise to one of these."""
    return {normalise(text) for (text,) in store.execute(sql.ALL_PROMPT_TEXTS)}


def prompt_id(round_: int, text: str) -> str:
    """Content-addressed id: the same prompt in the same round always gets the same id (idempotent re-runs)."""
    return hashlib.sha1(f"{round_}\x00{normalise(text)}".encode()).hexdigest()[:16]


def load_seed_file(path: str | Path) -> list[SeedPrompt]:
    """Read a JSON Lines seed file of {"text": ..., "category": ...}; every problem is a one-line InputError.

    JSON Lines as specified: one JSON value per `\n`-terminated line (a U+2028 inside a JSON string is text, not
    a line break), UTF-8 with an optional byte-order mark, blank lines skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"seed file '{path}' does not exist; expected a JSONL file of {{text, category}} rows"
        )
    try:
        lines = p.read_bytes().decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise InputError(f"seed file '{path}' is not UTF-8 (byte {e.start}); expected UTF-8 JSONL") from None
    seeds: list[SeedPrompt] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(
                f'seed file \'{path}\' line {no} is not JSON; expected {{"text": ..., "category": ...}}'
            ) from None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or clean_prompt(text, 1) is None:
            raise InputError(
                f"seed file '{path}' line {no} has no usable 'text'; expected a non-empty string"
            )
        if clean_prompt(text, 1) != " ".join(text.split()):
            raise InputError(f"seed file '{path}' line {no} contains control characters; expected plain text")
        if not normalise(text):
            raise InputError(
                f"seed file '{path}' line {no} has text {text!r} with no letters or digits; expected words"
            )
        category = row.get("category")
        if category is not None and not isinstance(category, str):
            raise InputError(
                f"seed file '{path}' line {no} has category={category!r}; expected a string (or none)"
            )
        seeds.append(SeedPrompt(text=" ".join(text.split()), category=category or "uncategorised"))
    if not seeds:
        raise InputError(f"seed file '{path}' has no prompts; expected at least one JSONL row")
    return seeds
