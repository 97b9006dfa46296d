"""Stage 4, `select`: hard prompts and preference pairs, in SQL over the store (queries in `data.sql`).

- Hard prompts seed the next round. GPO (arXiv 2406.10977) attacks where the defender fails: lowest mean
  reward. eva (arXiv 2411.00062) evolves the most informative prompts: largest max - min reward gap (its
  default regret proxy). The paper samples 25% by gap-weighted sampling; we take the deterministic top 25%.
- Pairs are the best vs the worst response of each prompt (eva's and GPO's DPO data), kept when the best
  beats the worst strictly and by at least `select.margin`; the resample stage's extra answers count too.
- Pair yield = hard prompts with a pair / hard prompts (logged): where the attacker won, DPO should still learn.
"""

from __future__ import annotations

import time

from core.config import SelectConfig
from core.errors import StageError
from data import sql
from data.store import StageResult, Store


def select_round(store: Store, cfg: SelectConfig, round_: int, scorer: str) -> StageResult:
    started = time.perf_counter()
    if store.count("scores", round_) == 0:
        raise StageError(f"round {round_} has no scores; run its score stage first")
    stored = [r[0] for r in store.execute(sql.ROUND_SCORERS, [round_])]
    if scorer not in stored:  # a scorer's scores under another name would give zero pairs, silently
        raise StageError(
            f"round {round_} has no scores under scorer '{scorer}' (it has: {', '.join(stored)}); expected the "
            f"scorer the round was scored with, or `--force score` to score it with this one"
        )
    params = {"round": round_, "scorer": scorer, "strategy": cfg.strategy, "fraction": cfg.hard_fraction}
    with store.stage(round_, "select", started) as result:
        store.execute(sql.SELECT_HARD, params)
        store.execute(sql.SELECT_PAIRS, {"round": round_, "scorer": scorer, "margin": cfg.margin})
        hard, pairs = store.count("hard_prompts", round_), store.count("pairs", round_)
        with_pair = int(store.scalar(sql.HARD_WITH_PAIR, [round_]))
        result.rows = hard + pairs
        result.details = {
            "hard_prompts": hard,
            "pairs": pairs,
            "hard_with_pair": with_pair,
            "pair_yield": with_pair / hard if hard else None,
            "strategy": cfg.strategy,
            "margin": cfg.margin,
        }
    return result
