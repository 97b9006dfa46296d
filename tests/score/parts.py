"""Two deterministic scorers for the combined-scorer tests: answer length, and whether it says "please"."""

from __future__ import annotations


class LengthPart:
    def __init__(self, cfg: object):
        self.name = "length"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [len(r) / 100 for r in responses]

    def close(self) -> None:
        pass


class PolitePart:
    def __init__(self, cfg: object):
        self.name = "polite"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [1.0 if "please" in r else 0.0 for r in responses]

    def close(self) -> None:
        pass
