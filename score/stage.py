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
    scorer: Scorer,
    name: str,
    rows: list[dict[str, Any]],
    known: dict[tuple[str, str], dict[str, float]] | None = None,
) -> dict[str, list[float]]:
    """One finite value per row (`prompt`, `response`, `response_id`) under `name` — and under each part's name
    for a scorer with parts (`score_parts`, e.g. `kind: combined`) — or a one-line StageError.

    Identical (prompt, response) rows are scored once and share the value: a batched forward pass can differ in
    the last bits between copies (padding, kernel blocking), which would turn identical answers into a
    "preference" pair in select. `known` holds values already stored for such texts (the resample stage's
    new answers that repeat an old one get the old values, for the same reason).
    """
    known = known or {}
    unique = [key for key in dict.fromkeys((r["prompt"], r["response"]) for r in rows) if key not in known]
    prompts, responses = [p for p, _ in unique], [t for _, t in unique]
    if not unique:
        scored: dict[str, list[float]] = {}
    elif hasattr(scorer, "score_parts"):
        scored = scorer.score_parts(prompts, responses)
    else:
        scored = {name: scorer.score(prompts, responses)}
    names = list(scored) or list(next(iter(known.values()), {name: 0.0}))
    out: dict[str, list[float]] = {}
    for part in names:
        if len(scored.get(part, [])) != len(unique):
            raise StageError(
                f"scorer '{part}' returned {len(scored.get(part, []))} rewards for {len(unique)} responses; "
                "expected one per response. Nothing was stored"
            )
        by_row = {k: v[part] for k, v in known.items() if part in v} | dict(
            zip(unique, scored.get(part, []), strict=True)
        )
        values = [by_row[(r["prompt"], r["response"])] for r in rows]
        bad = [(r["response_id"], v) for r, v in zip(rows, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise StageError(
                f"scorer '{part}' returned {len(bad)} non-finite rewards (first: {bad[0][1]} for response "
                f"{bad[0][0]}); expected finite numbers. Nothing was stored"
            )
        out[part] = [float(v) for v in values]
    if name not in out:
        raise StageError(
            f"scorer '{name}' returned no scores under its own name; expected '{name}' among {names}"
        )
    return out


def score_records(
    round_: int, rows: list[dict[str, Any]], scored: dict[str, list[float]]
) -> list[ScoreRecord]:
    """One `scores` row per response and scorer name (a combined scorer's parts included)."""
    return [
        ScoreRecord(r["response_id"], part, round_, v)
        for part, values in scored.items()
        for r, v in zip(rows, values, strict=True)
    ]


def score_round(store: Store, round_: int, scorer: Scorer, name: str) -> StageResult:
    """Score all responses of `round_` and store them under `name` (one transaction, stage `score`).

    `name` is `score.scorer.scorer_name(cfg)`, the one name selection and training look scores up by.
    """
    started = time.perf_counter()
    rows = store.rows(sql.ROUND_RESPONSES, [round_])
    if not rows:
        raise StageError(f"round {round_} has no responses; run its respond stage first")
    scored = score_rows(scorer, name, rows)
    with store.stage(round_, "score", started) as result:
        result.rows = store.insert("scores", to_arrow(score_records(round_, rows, scored), ScoreRecord))
        result.details = {
            "scorer": name,
            "parts": [p for p in scored if p != name],
            **getattr(scorer, "stats", {}),
        }
    return result
