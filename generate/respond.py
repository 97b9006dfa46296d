"""Stage 2, `respond`: the defender answers every prompt of the round N times in one vLLM call.

Each prompt is one request with `SamplingParams(n=N, seed=...)`, the seed derived from the run seed and the
prompt id, so a re-run reproduces the same responses. Prompts too long for the defender's context (prompt +
max_tokens > vllm.max_model_len) are dropped and counted in the stage log rather than crashing the round.
"""

from __future__ import annotations

import json
import logging
import time

from core.config import SparringConfig
from core.errors import StageError
from data import sql
from data.records import ResponseRecord, to_arrow
from data.store import StageResult, Store
from generate.engine import Player, chat_prompt_tokens, request_seed

log = logging.getLogger(__name__)


def respond(store: Store, cfg: SparringConfig, round_: int, llm: Player, defender_model: str) -> StageResult:
    """Sample N defender responses per prompt and store them (one transaction, stage `respond`)."""
    started = time.perf_counter()
    from vllm import SamplingParams

    dcfg = cfg.defender
    prompts = store.rows(sql.ROUND_PROMPTS, [round_])
    if not prompts:
        raise StageError(f"round {round_} has no prompts; run its attack stage first")
    conversations = [[{"role": "user", "content": p["text"]}] for p in prompts]
    budget = cfg.vllm.max_model_len - dcfg.max_tokens
    fits = [chat_prompt_tokens(llm, c) <= budget for c in conversations]
    kept = [p for p, ok in zip(prompts, fits, strict=True) if ok]
    params = [
        SamplingParams(
            n=dcfg.n,
            seed=request_seed(cfg.run.seed, "respond", p["prompt_id"]),
            temperature=dcfg.temperature,
            top_p=dcfg.top_p,
            max_tokens=dcfg.max_tokens,
        )
        for p in kept
    ]
    outputs = (
        llm.chat([c for c, ok in zip(conversations, fits, strict=True) if ok], params, use_tqdm=True)
        if kept
        else []
    )
    records = []
    for prompt, sp, out in zip(kept, params, outputs, strict=True):
        gen = json.dumps(
            {
                "n": sp.n,
                "seed": sp.seed,
                "temperature": sp.temperature,
                "top_p": sp.top_p,
                "max_tokens": sp.max_tokens,
            },
            sort_keys=True,
        )
        for c in sorted(out.outputs, key=lambda c: c.index):
            records.append(
                ResponseRecord(
                    response_id=f"{prompt['prompt_id']}-{c.index}",
                    prompt_id=prompt["prompt_id"],
                    round=round_,
                    sample_index=c.index,
                    text=c.text,
                    finish_reason=c.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(c.token_ids),
                    defender_model=defender_model,
                    gen_params=gen,
                )
            )
    too_long = len(prompts) - len(kept)
    if too_long:
        log.warning("round %d: %d prompts longer than the defender's context were dropped", round_, too_long)
    with store.stage(round_, "respond", started) as result:
        result.rows = store.insert("responses", to_arrow(records, ResponseRecord))
        result.details = {
            "too_long": too_long,
            "n": dcfg.n,
            "empty": sum(not r.text.strip() for r in records),
        }
    return result
