"""Text keys every room compares prompts by: the normalised form and its word n-grams.

One definition, so de-duplication (`data.prompts`), the attacker's diversity reward (`train.attacker`), the
report's diversity metrics (`data.report`) and the toy judge (`toy.judge`) all see the same words.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

_NOT_WORD = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """The de-duplication key: case, punctuation and spacing do not make a prompt new."""
    return " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def words(text: str) -> list[str]:
    """The words of the normalised text (runs of word characters)."""
    return normalise(text).split()


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """Word n-grams of the normalised text, in order, repeats kept."""
    w = words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def ngram_set(text: str, max_n: int) -> set[tuple[str, ...]]:
    """The set of word 1..max_n-grams of the normalised text (what Jaccard similarities compare)."""
    return {g for n in range(1, max_n + 1) for g in ngrams(text, n)}


def distinct_ngrams(texts: list[str], n: int = 2) -> float:
    """Distinct-n: unique word n-grams / all word n-grams over a set of texts (1 = no n-gram repeats)."""
    grams = [g for t in texts for g in ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_pairwise_distance(texts: list[str], n: int = 2) -> float:
    """Mean over pairs of 1 − Jaccard similarity of word 1..n-gram sets (0 = all identical, 1 = disjoint)."""
    sets = [ngram_set(t, n) for t in texts]
    pairs = list(itertools.combinations(range(len(sets)), 2))
    if not pairs:
        return 0.0
    total = 0.0
    for i, j in pairs:
        union = len(sets[i] | sets[j])
        total += 1 - (len(sets[i] & sets[j]) / union if union else 1.0)
    return total / len(pairs)
