"""The scorer interface: anything that turns (prompt, response) pairs into one number each.

The reward model (`kind: reward_model`) implements it; anything else plugs in with
`kind: package.module:ClassName`, constructed as `ClassName(cfg)` from the `SparringConfig` (the toy world's
judge does exactly that: `toy.judge:ToyJudge`). Scores are stored under `scorer_name(cfg)`, the name selection
and training read them back by, whatever the scorer calls itself.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from core.config import SparringConfig
from core.errors import ConfigError


@runtime_checkable
class Scorer(Protocol):
    """`name` identifies the scorer in the store (scores are keyed by response and scorer)."""

    name: str

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...

    def close(self) -> None: ...


def build_scorer(cfg: SparringConfig) -> Scorer:
    kind = cfg.reward.kind
    if kind == "reward_model":
        from score.reward_model import RewardModelScorer

        return RewardModelScorer(cfg)
    if ":" in kind:
        scorer = scorer_class(kind)(cfg)
        if not isinstance(scorer, Scorer):
            raise ConfigError(
                f"reward.kind='{kind}' is not a Scorer; expected .name, .score(prompts, responses), .close()"
            )
        return scorer
    raise ConfigError(f"reward.kind='{kind}' is unknown; expected reward_model or package.module:ClassName")


def scorer_class(kind: str) -> type:
    """The class named by `package.module:ClassName`; importing it is cheap, so preflight does it too."""
    module, _, name = kind.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"reward.kind='{kind}' cannot be imported ({e}); expected package.module:ClassName"
        ) from None
    if not isinstance(cls, type):
        raise ConfigError(f"reward.kind='{kind}' is not a class; expected package.module:ClassName")
    return cls


def scorer_name(cfg: SparringConfig) -> str:
    """The name scores are stored under, known without loading the scorer (for selection and resume)."""
    if cfg.reward.kind == "reward_model":
        return cfg.reward.model
    return cfg.reward.kind
