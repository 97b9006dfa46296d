"""`reward.kind: combined`: the weighted sum of named scorers, each stored under its own name.

Real red-teaming mixes two rewards: refuse the harmful (a guard's P(safe), GPO's reward) and help the benign (a
helpfulness reward model, eva's). Each part is any scorer `reward.kind` can name; the combination is
Σ weight_i · score_i. Parts are loaded one at a time (load, score every row, close, next), so on one GPU a guard
and a reward model never hold memory together. Selection and attack success read the combination; the parts are
in the store beside it for the report and for anyone re-weighting in SQL.
"""

from __future__ import annotations

import dataclasses

from core.config import ScorerPart, SparringConfig


def part_config(cfg: SparringConfig, part: ScorerPart) -> SparringConfig:
    """The config that builds one part's scorer: the run's reward settings with the part's kind and model."""
    reward = dataclasses.replace(
        cfg.reward, kind=part.kind, model=part.model, guard=part.guard, parts=[], failure_below=None
    )
    return dataclasses.replace(cfg, reward=reward)


class CombinedScorer:
    def __init__(self, cfg: SparringConfig, name: str):
        self.cfg = cfg
        self.name = name
        self.parts = cfg.reward.parts
        self.stats: dict[str, object] = {}

    def score_parts(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Each part's scores under its name, and the weighted sum under the combined scorer's name."""
        from score.scorer import build_scorer

        out: dict[str, list[float]] = {}
        for part in self.parts:
            scorer = build_scorer(part_config(self.cfg, part))
            try:
                out[part.name] = [float(v) for v in scorer.score(prompts, responses)]
            finally:
                scorer.close()
            self.stats[part.name] = getattr(scorer, "stats", {})
            if len(out[part.name]) != len(prompts):
                return out  # the stage reports the short part in one line
        out[self.name] = [
            sum(part.weight * out[part.name][i] for part in self.parts) for i in range(len(prompts))
        ]
        return out

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.score_parts(prompts, responses)[self.name]

    def close(self) -> None:
        """Each part is closed as soon as it has scored."""
