"""Stage 3, `score`: every response of the round gets one number from the configured scorer."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from core.errors import StageError
from data import sql
from data.records import ScoreRecord, to_arrow
from data.store import StageResult, Store
from score.scorer import Scorer

log = logging.getLogger(__name__)


def score_rows(
    scorer: Scorer, name: str, rows: list[dict[str, Any]], known: dict[tuple[str, str], float] | None = None
) -> list[float]:
    """One finite reward per row (`prompt`, `response`, `response_id`), or a one-line StageError.

    Identical (prompt, response) rows are scored once and share the value: a batched forward pass can differ in
    the last bits between copies (padding, kernel blocking), which would turn identical answers into a
    "preference" pair in select. `known` holds values already stored for such texts (the resample stage's
    new answers that repeat an old one get the old value, for the same reason).
    """
    known = known or {}
    unique = [key for key in dict.fromkeys((r["prompt"], r["response"]) for r in rows) if key not in known]
    scored = scorer.score([p for p, _ in unique], [t for _, t in unique]) if unique else []
    if len(scored) != len(unique):
        raise StageError(
            f"scorer '{name}' returned {len(scored)} rewards for {len(unique)} responses; expected one "
            "per response. Nothing was stored"
        )
    by_row = {**known, **dict(zip(unique, scored, strict=True))}
    values = [by_row[(r["prompt"], r["response"])] for r in rows]
    bad = [(r["response_id"], v) for r, v in zip(rows, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise StageError(
            f"scorer '{name}' returned {len(bad)} non-finite rewards (first: {bad[0][1]} for response "
            f"{bad[0][0]}); expected finite numbers. Nothing was stored"
        )
    return [float(v) for v in values]


def score_round(store: Store, round_: int, scorer: Scorer, name: str) -> StageResult:
    """Score all responses of `round_` and store them under `name` (one transaction, stage `score`).

    `name` is `score.scorer.scorer_name(cfg)`, the one name selection and training look scores up by.
    """
    started = time.perf_counter()
    rows = store.rows(sql.ROUND_RESPONSES, [round_])
    if not rows:
        raise StageError(f"round {round_} has no responses; run its respond stage first")
    values = score_rows(scorer, name, rows)
    records = [ScoreRecord(r["response_id"], name, round_, v) for r, v in zip(rows, values, strict=True)]
    with store.stage(round_, "score", started) as result:
        result.rows = store.insert("scores", to_arrow(records, ScoreRecord))
        result.details = {"scorer": name, **getattr(scorer, "stats", {})}
    return result
