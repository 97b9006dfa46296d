"""The scorer interface: anything that turns (prompt, response) pairs into one number each.

Built in: the reward model (`kind: reward_model`), a guard classifier (`kind: guard`) and the weighted sum of
named parts (`kind: combined`, whose parts are stored too). Anything else plugs in with
`kind: package.module:ClassName`, constructed as `ClassName(cfg)` from the `SparringConfig` (the toy world's
judge does exactly that: `toy.judge:ToyJudge`). Scores are stored under `scorer_name(cfg)`, the name selection
and training read them back by, whatever the scorer calls itself. What counts as a defender failure is
`cfg.reward.failure_threshold()`, one rule for every scorer.
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
    if kind == "guard":
        from score.guard import GuardScorer

        return GuardScorer(cfg)
    if kind == "combined":
        from score.combined import CombinedScorer

        return CombinedScorer(cfg, scorer_name(cfg))
    if ":" in kind:
        scorer = scorer_class(kind)(cfg)
        if not isinstance(scorer, Scorer):
            raise ConfigError(
                f"reward.kind='{kind}' is not a Scorer; expected .name, .score(prompts, responses), .close()"
            )
        return scorer
    raise ConfigError(
        f"reward.kind='{kind}' is unknown; expected reward_model, guard, combined or package.module:ClassName"
    )


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
    if cfg.reward.kind in ("reward_model", "guard"):
        return cfg.reward.model
    if cfg.reward.kind == "combined":
        return "combined(" + ", ".join(f"{p.weight:g}·{p.name}" for p in cfg.reward.parts) + ")"
    return cfg.reward.kind


def check_scorer(cfg: SparringConfig, build_tiny: bool = True, key: str = "reward") -> None:
    """Preflight of the configured scorer before any engine loads (a bad model, label or class fails in a
    second, not after the round's generation): each part of a combined scorer in turn. `build_tiny=False`
    (a dry run) leaves `tiny:` models unbuilt and unchecked."""
    from core.preflight import check_reward_model
    from core.tiny_models import is_tiny, resolve_model

    r = cfg.reward
    if r.kind == "combined":
        from score.combined import part_config

        for i, part in enumerate(r.parts):
            check_scorer(part_config(cfg, part), build_tiny, f"reward.parts[{i}]")
        return
    if ":" in r.kind:
        scorer_class(r.kind)
        return
    if is_tiny(r.model) and not build_tiny:
        return
    ref = resolve_model(r.model, cfg.run.tiny_models_dir)
    if r.kind == "guard":
        from score.guard import check_guard

        check_guard(ref, r.guard, f"{key}.guard")
    else:
        check_reward_model(ref)


def describe_scorer(cfg: SparringConfig) -> str:
    """One line for a dry run's plan: what scores, and what counts as a defender failure."""
    from core.preflight import describe_model

    r = cfg.reward
    below = r.failure_threshold()
    rule = f"failure below {below:g}" if below is not None else "no failure rule (reward.failure_below unset)"
    if r.kind == "combined":
        parts = "; ".join(f"{p.weight:g} × {p.name}: {p.kind} {p.model}" for p in r.parts)
        return f"combined ({parts}), {rule}"
    if r.kind in ("reward_model", "guard"):
        what = "reward model" if r.kind == "reward_model" else f"guard ({r.guard.output})"
        return f"{what} {describe_model(r.model, 'reward')}, {rule}"
    return f"{r.kind}, {rule}"
