"""A deterministic scorer for the resample tests: the reward is a hash of the answer's text, in {-1, 0, 1}."""

from __future__ import annotations

import hashlib


class TextHashScorer:
    def __init__(self, cfg: object):
        self.name = "tests.generate.scorers:TextHashScorer"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(hashlib.sha1(r.encode()).digest()[0] % 3 - 1) for r in responses]

    def close(self) -> None:
        pass
