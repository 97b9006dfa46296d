"""Stage `resample`: more answers for the prompts whose answers give no preference pair.

When the attacker finds a weakness, the defender often fails the same way on all N answers: the rewards tie,
best equals worst, and DPO gets no pair exactly where the game should pay off. DAPO (Yu et al., arXiv
2503.14476) calls such groups signal-free and keeps sampling until they disagree ("dynamic sampling"); offline,
that is best-of-N rejection sampling on the hard prompts. This stage does it after `score`:

- a prompt is *triggered* when its answers cannot make a pair (best − worst is 0 or below `select.margin`) or,
  with `defender.resample.failures` on, when even its best answer is a failure (`reward.failure_threshold()`);
- up to `defender.resample.passes` extra vLLM passes give every still-triggered prompt an equal share of the
  budget (`max_samples` answers per prompt in all, the first N included), optionally at a higher temperature;
  each pass's answers are scored before the next pass decides;
- the new answers are stored like the first N (`sample_pass` = their pass, `gen_params` their sampling), with
  their scores under the round's scorer, in one transaction with the stage-log row; selection then sees all.

Seeds are derived from the run seed, the prompt and the pass, so a re-run reproduces the same answers. On one
GPU the defender's engine is closed before the scorer loads in every pass (never two models at once).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field

from core.config import SparringConfig
from data import sql
from data.records import ResponseRecord, ScoreRecord, to_arrow
from data.store import StageResult, Store
from generate.engine import Engines, request_seed
from score.scorer import build_scorer
from score.stage import score_records, score_rows

log = logging.getLogger(__name__)


@dataclass
class PromptAnswers:
    """What is known of one prompt's answers while resampling."""

    prompt_id: str
    prompt: str
    rewards: list[float] = field(default_factory=list)
    count: int = 0  # answers so far (sample indices 0..count-1)


def triggered(rewards: list[float], margin: float, failure_below: float | None) -> bool:
    """No pair can be made from these rewards, or (when asked) even the best one is a failure."""
    if not rewards:
        return False
    spread = max(rewards) - min(rewards)
    if spread <= 0 or spread < margin:
        return True
    return failure_below is not None and max(rewards) < failure_below


def resample(
    store: Store, cfg: SparringConfig, round_: int, pool: Engines, defender_model: str, scorer: str
) -> StageResult:
    """Extra answers for the triggered prompts of `round_`, scored and stored (one transaction)."""
    from vllm import SamplingParams

    started = time.perf_counter()
    dcfg, rcfg = cfg.defender, cfg.defender.resample
    prompts: dict[str, PromptAnswers] = {}
    failure_below = cfg.reward.failure_threshold() if rcfg.failures else None
    known: dict[tuple[str, str], dict[str, float]] = {}
    for row in store.rows(sql.ROUND_SCORED_RESPONSES, {"round": round_, "scorer": scorer}):
        entry = prompts.setdefault(row["prompt_id"], PromptAnswers(row["prompt_id"], row["prompt"]))
        entry.rewards.append(row["value"])
        entry.count = max(entry.count, row["sample_index"] + 1)
        known[(row["prompt"], row["response"])] = {scorer: row["value"]}
    for part in cfg.reward.parts:  # a combined scorer's parts are stored for the new answers too
        for row in store.rows(sql.ROUND_SCORED_RESPONSES, {"round": round_, "scorer": part.name}):
            known.get((row["prompt"], row["response"]), {})[part.name] = row["value"]
    known = {k: v for k, v in known.items() if len(v) == 1 + len(cfg.reward.parts)}  # every value, or rescore

    def still_triggered() -> list[PromptAnswers]:
        return [
            p
            for p in prompts.values()
            if p.count < rcfg.max_samples and triggered(p.rewards, cfg.select.margin, failure_below)
        ]

    if 0 < rcfg.max_samples <= dcfg.n:
        log.warning(
            "round %d: defender.resample.max_samples=%d is not above defender.n=%d: no answer to add",
            round_, rcfg.max_samples, dcfg.n,
        )  # fmt: skip
    first = still_triggered() if rcfg.max_samples > dcfg.n else []
    per_pass = math.ceil(max(0, rcfg.max_samples - dcfg.n) / rcfg.passes)
    temperature = rcfg.temperature if rcfg.temperature is not None else dcfg.temperature
    responses: list[ResponseRecord] = []
    scores: list[ScoreRecord] = []
    passes = 0
    todo = first
    while todo and passes < rcfg.passes:
        passes += 1
        params = [
            SamplingParams(
                n=min(per_pass, rcfg.max_samples - p.count),
                seed=request_seed(cfg.run.seed, "resample", p.prompt_id, passes),
                temperature=temperature,
                top_p=dcfg.top_p,
                max_tokens=dcfg.max_tokens,
            )
            for p in todo
        ]
        outputs = pool.get(defender_model).chat(
            [[{"role": "user", "content": p.prompt}] for p in todo], params, use_tqdm=True
        )
        pool.release()  # the scorer loads next
        new: list[ResponseRecord] = []
        for p, sp, out in zip(todo, params, outputs, strict=True):
            gen = json.dumps(
                {"n": sp.n, "seed": sp.seed, "temperature": sp.temperature, "top_p": sp.top_p,
                 "max_tokens": sp.max_tokens, "pass": passes},
                sort_keys=True,
            )  # fmt: skip
            for c in sorted(out.outputs, key=lambda c: c.index):
                index = p.count + c.index
                new.append(
                    ResponseRecord(
                        f"{p.prompt_id}-{index}", p.prompt_id, round_, index, c.text, c.finish_reason,
                        len(out.prompt_token_ids or []), len(c.token_ids), defender_model, gen, passes,
                    )
                )  # fmt: skip
        rows = [
            {"prompt": prompts[r.prompt_id].prompt, "response": r.text, "response_id": r.response_id}
            for r in new
        ]
        judge = build_scorer(cfg)
        try:
            scored = score_rows(judge, scorer, rows, known)
        finally:
            judge.close()
        for i, (r, row) in enumerate(zip(new, rows, strict=True)):
            prompts[r.prompt_id].rewards.append(scored[scorer][i])
            prompts[r.prompt_id].count = max(prompts[r.prompt_id].count, r.sample_index + 1)
            known[(row["prompt"], row["response"])] = {part: values[i] for part, values in scored.items()}
        scores += score_records(round_, rows, scored)
        responses += new
        todo = still_triggered()
    spread = sum(not triggered(p.rewards, cfg.select.margin, None) for p in first)
    if first:
        log.info(
            "round %d: resampled %d prompts with %d extra answers in %d pass(es); %d now have a pair",
            round_, len(first), len(responses), passes, spread,
        )  # fmt: skip
    with store.stage(round_, "resample", started) as result:
        store.insert("responses", to_arrow(responses, ResponseRecord))
        store.insert("scores", to_arrow(scores, ScoreRecord))
        result.rows = len(responses)
        result.details = {
            "triggered": len(first),
            "extra_samples": len(responses),
            "passes": passes,
            "spread_after": spread,
            "max_samples": rcfg.max_samples,
            "temperature": temperature,
            "failure_below": failure_below,
        }
    return result
