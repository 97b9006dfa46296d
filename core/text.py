"""Text keys every room compares prompts by: the normalised form and its word n-grams.

One definition, so de-duplication (`data.prompts`), the attacker's diversity reward (`train.attacker`), the
report's diversity metrics (`data.report`) and the toy judge (`toy.judge`) all see the same words.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

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


PAIRWISE_EXACT_UP_TO = 300  # texts; above, the mean pairwise distance is estimated from sampled pairs
PAIRWISE_SAMPLES = 20_000


def mean_pairwise_distance(texts: list[str], n: int = 2, seed: int = 0) -> float:
    """Mean over pairs of 1 − Jaccard similarity of word 1..n-gram sets (0 = all identical, 1 = disjoint).

    Exact over all pairs up to `PAIRWISE_EXACT_UP_TO` texts; beyond, the mean over `PAIRWISE_SAMPLES` pairs
    drawn uniformly with a fixed seed (an unbiased estimate, standard error ≤ 0.5 / √20,000 ≈ 0.004), so a
    round of 100k prompts costs the same as one of 300."""
    if len(texts) < 2:
        return 0.0
    grams = gram_sets(texts, n)
    if len(texts) <= PAIRWISE_EXACT_UP_TO:
        left, right = np.array(list(itertools.combinations(range(len(texts)), 2))).T
    else:
        rng = np.random.default_rng(seed)
        left = rng.integers(0, len(texts), PAIRWISE_SAMPLES)
        right = (left + rng.integers(1, len(texts), PAIRWISE_SAMPLES)) % len(texts)  # never the same text
    both_empty = (grams.sizes[left] == 0) & (grams.sizes[right] == 0)  # two empty texts are the same text
    return float((1.0 - np.where(both_empty, 1.0, grams.jaccard(left, right))).mean())


# ---------------------------------------------------------------------------------------------------------
# N-gram sets of many texts at once, as arrays (linear in the total words; what the similarity searches use)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-spread 64-bit hash of 64-bit keys (uint64 wraps by design)."""
    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _word_keys(vocabulary: list[str]) -> np.ndarray:
    """A stable 64-bit key per word (blake2b of its text): the same in every process and every call."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in vocabulary),
        np.uint64,
        len(vocabulary),
    )


@dataclass(frozen=True)
class GramSets:
    """The word 1..n-gram sets of many texts as one CSR array: text i's grams are
    `keys[indptr[i]:indptr[i + 1]]`, sorted and unique. A gram's key is a 64-bit hash of its words and
    length (a collision among 10⁷ distinct grams has probability ~3·10⁻⁶)."""

    indptr: np.ndarray
    keys: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def sets(self) -> list[frozenset[int]]:
        keys = self.keys.tolist()
        bounds = self.indptr.tolist()
        return [frozenset(keys[a:b]) for a, b in itertools.pairwise(bounds)]

    def intersections(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """|grams(left[k]) ∩ grams(right[k])| for each pair k."""
        sets = self.sets()
        return np.fromiter((len(sets[i] & sets[j]) for i, j in zip(left.tolist(), right.tolist(), strict=True)),
                           np.float64, len(left))  # fmt: skip

    def jaccard(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Jaccard similarity of each pair's gram sets (0 when both are empty)."""
        inter = self.intersections(left, right)
        union = self.sizes[left] + self.sizes[right] - inter
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def gram_sets(texts: list[str], max_n: int, normalised: bool = False) -> GramSets:
    """Word 1..max_n-gram sets (of `words(text)`) of every text, built with array operations; `normalised`
    says the texts are already `normalise`d."""
    tokens = [(t if normalised else normalise(t)).split() for t in texts]
    vocabulary: dict[str, int] = {}
    lengths = np.fromiter((len(ws) for ws in tokens), np.int64, len(tokens))
    ids = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for ws in tokens for w in ws), np.int64,
                      int(lengths.sum()))  # fmt: skip
    word = _word_keys(list(vocabulary))[ids] if len(ids) else np.zeros(0, np.uint64)
    row = np.repeat(np.arange(len(tokens)), lengths)
    keys, rows = [mix64(word ^ np.uint64(1))], [row]
    chain = word
    for n in range(2, max_n + 1):
        if len(word) < n:
            break
        chain = mix64(chain[:-1] * np.uint64(0x9E3779B97F4A7C15) ^ word[n - 1 :] ^ np.uint64(n))
        same_text = row[: len(row) - n + 1] == row[n - 1 :]
        keys.append(chain[same_text])
        rows.append(row[: len(row) - n + 1][same_text])
    all_keys, all_rows = np.concatenate(keys), np.concatenate(rows)
    order = np.lexsort((all_keys, all_rows))
    all_keys, all_rows = all_keys[order], all_rows[order]
    first = np.ones(len(all_keys), dtype=bool)
    first[1:] = (all_keys[1:] != all_keys[:-1]) | (all_rows[1:] != all_rows[:-1])
    indptr = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.bincount(all_rows[first], minlength=len(texts)), out=indptr[1:])
    return GramSets(indptr, all_keys[first])
