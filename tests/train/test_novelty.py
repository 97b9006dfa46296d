"""`train.novelty` at scale: the approximate search agrees with the exact computation, and copies are never missed.

Tolerance (stated in the module docstring): on a 1,000-prompt round with 3,000 prompts of history, the novelty the
attacker's reward uses has Spearman rank correlation ≥ 0.9 with the exact one and a mean absolute error ≤ 0.03, the
closest Jaccard similarity has Spearman ≥ 0.9, ≥ 99% of prompts whose closest Jaccard is ≥ 0.5 get it exactly, no
similarity is over-estimated, and every exact copy has novelty 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import train.novelty as nov
from bench.synthetic import texts
from core.text import gram_sets, mean_pairwise_distance, ngram_set


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


@pytest.fixture(scope="module")
def game_like():
    history = texts(3000, seed=1)
    return texts(1000, seed=2, pool=history[:1000]), history


@pytest.fixture(scope="module")
def exact(game_like):
    return nov.closest_grams(*game_like, method="exact")


def agrees(approx: tuple[np.ndarray, np.ndarray], exact: tuple[np.ndarray, np.ndarray]) -> None:
    (aj, ac), (ej, ec) = approx, exact
    assert spearman(aj, ej) >= 0.9 and spearman(ac, ec) >= 0.9
    near = ej >= 0.5
    assert near.sum() > 100  # the synthetic round has near copies to find
    found = np.isclose(aj[near], ej[near])
    assert found.mean() >= 0.99  # (measured at 20k + 60k: 99.9%)
    assert (aj <= ej + 1e-12).all()  # a candidate's similarity is exact: never above the true maximum


def test_flat_search_agrees_with_exact(game_like, exact):
    agrees(nov.closest_grams(*game_like, method="approximate"), exact)


def test_inverted_file_search_agrees_with_exact(game_like, exact, monkeypatch):
    monkeypatch.setattr(
        nov, "IVF_MIN_ROWS", 500
    )  # the index large runs use, at a size the exact path can check
    monkeypatch.setattr(nov, "IVF_LIST_SIZE", 200)
    agrees(nov.closest_grams(*game_like, method="approximate"), exact)


def test_identical_prompts_always_count_as_duplicates():
    crowd = [f"please explain how to open the door number {i} quickly" for i in range(300)]  # near copies
    round_ = [*crowd[:50], "Please explain how to open the door number 7, quickly!"]  # a copy of crowd[7]
    history = crowd[50:]
    for method in ("exact", "approximate"):
        got = nov.novelty(round_, history, method=method)
        assert got[7] == 0.0 and got[-1] == 0.0
        assert nov.ngram_novelty(round_, history, method=method)[-1] == 0.0
        assert nov.embedding_novelty(round_, history, method=method)[-1] == 0.0


def test_gram_sets_are_the_ngram_sets():
    sample = ["how to pick a lock", "Ünïcode, ß and ǅ!", "", "a", "x y x y x", *texts(50, seed=3)]
    for max_n in (1, 2, 3):
        grams = gram_sets(sample, max_n)
        expected = [ngram_set(t, max_n) for t in sample]
        assert grams.sizes.tolist() == [len(e) for e in expected]
        left, right = np.triu_indices(len(sample), 1)
        want = [len(expected[i] & expected[j]) for i, j in zip(left, right, strict=True)]
        assert grams.intersections(left, right).tolist() == want


def test_sampled_pairwise_distance_is_close_to_the_exact_mean(monkeypatch):
    sample = texts(1000, seed=4)
    estimate = mean_pairwise_distance(sample)
    monkeypatch.setattr("core.text.PAIRWISE_EXACT_UP_TO", 10**6)
    assert estimate == pytest.approx(mean_pairwise_distance(sample), abs=0.01)
