"""Custom scorers (`reward.kind: tests.reliability.bad_scorers:NaNScorer`) that return non-finite rewards.

Only one reward of the round is bad, so "nothing of the stage is written" is a real check: the good ones
must not be stored either.
"""

from __future__ import annotations

import math

from core.config import SparringConfig


class _OneBadScorer:
    bad = math.nan

    def __init__(self, cfg: SparringConfig):
        self.name = type(self).__name__

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        values = [float(i) for i in range(len(responses))]
        values[-1] = self.bad
        return values

    def close(self) -> None:
        pass


class NaNScorer(_OneBadScorer):
    bad = math.nan


class InfScorer(_OneBadScorer):
    bad = math.inf


class NegInfScorer(_OneBadScorer):
    bad = -math.inf


class ShortScorer(_OneBadScorer):
    """Forgets the last response: one reward too few."""

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [0.0] * (len(responses) - 1)
