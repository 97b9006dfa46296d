"""Synthetic prompts and run stores shaped like a real game's, for benches and tests that need scale, not vLLM.

Prompts: 8–40 words drawn from a 4,000-word Zipf vocabulary (exponent 1.1, the shape of natural text), of which
`near` are near copies of an earlier prompt (1–3 words replaced: what an attacker that found a weakness
writes) and `copies` exact copies; responses: 40–150 words from the same vocabulary. A store holds `rounds`
rounds of `prompts` prompts × `n` responses × one scorer, each round logged as the stages would log it and
selected by the real select stage, so every command reads it as a played run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from core.config import SparringConfig
from data.select import select_round
from data.store import Store

SCORER = "synthetic-rm"


def vocabulary(size: int = 4000, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(2, 9)))) for _ in range(size)]


def _zipf_words(rng: np.random.Generator, words: list[str], count: int) -> np.ndarray:
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    return rng.choice(len(words), size=count, p=p / p.sum())


def texts(
    n: int,
    seed: int = 0,
    *,
    near: float = 0.2,
    copies: float = 0.01,
    pool: Sequence[str] = (),
    length: tuple[int, int] = (8, 40),
) -> list[str]:
    """`n` texts; a share `near` are near copies and `copies` exact copies of an earlier text or of `pool`."""
    rng = np.random.default_rng(seed)
    words = vocabulary()
    lengths = rng.integers(length[0], length[1], size=n)
    drawn = _zipf_words(rng, words, int(lengths.sum()) + 3 * n)
    kind = rng.random(n)
    out: list[str] = []
    at = 0
    for i in range(n):
        earlier = len(out) + len(pool)
        if earlier and kind[i] < copies + near:
            j = int(rng.integers(earlier))
            source = out[j] if j < len(out) else pool[j - len(out)]
            if kind[i] < copies:
                out.append(source)
                continue
            edited = source.split()
            for _ in range(int(rng.integers(1, 4))):
                edited[int(rng.integers(len(edited)))] = words[drawn[at]]
                at += 1
            out.append(" ".join(edited))
        else:
            out.append(" ".join(words[k] for k in drawn[at : at + lengths[i]]))
            at += int(lengths[i])
    return out


def fill_store(cfg: SparringConfig, rounds: int, prompts: int, n: int = 4, seed: int = 0) -> None:
    """Write `rounds` played rounds into the run store of `cfg` (selected; not trained)."""
    responses_pool = pa.array(texts(5000, seed + 99, near=0.0, copies=0.0, length=(40, 150)))
    config_json = json.dumps({"attacker": {"num_prompts": prompts}, "defender": {"n": n}})
    history: list[str] = []
    with Store.for_run(cfg.run_dir) as store:
        for round_ in range(1, rounds + 1):
            rng = np.random.default_rng(seed + round_)
            prompt_texts = texts(prompts, seed + round_, pool=history[-prompts:])
            history += prompt_texts
            ids = [f"r{round_}-{i:07d}" for i in range(prompts)]
            store.begin_round(round_, "attacker", "defender", SCORER, config_json)
            with store.stage(round_, "attack") as result:
                result.rows = store.insert("prompts", _prompts_table(round_, ids, prompt_texts))
            response_ids = [f"{pid}-{j}" for pid in ids for j in range(n)]
            with store.stage(round_, "respond") as result:
                result.rows = store.insert(
                    "responses", _responses_table(round_, ids, response_ids, n, responses_pool, rng)
                )
            difficulty = np.repeat(rng.normal(size=prompts), n)
            with store.stage(round_, "score") as result:
                result.rows = store.insert(
                    "scores",
                    pa.table(
                        {
                            "response_id": response_ids,
                            "scorer": pa.array([SCORER] * len(response_ids)),
                            "round": pa.array(np.full(len(response_ids), round_), pa.int64()),
                            "value": -difficulty + 0.5 * rng.normal(size=len(response_ids)),
                        }
                    ),
                )
            with store.stage(round_, "resample"):
                pass
    for round_ in range(1, rounds):  # the last round is left for the bench to select
        with Store.for_run(cfg.run_dir) as store:
            select_round(store, cfg.select, round_, SCORER)


def _prompts_table(round_: int, ids: list[str], prompt_texts: list[str]) -> pa.Table:
    count = len(ids)
    return pa.table(
        {
            "prompt_id": ids,
            "round": pa.array(np.full(count, round_), pa.int64()),
            "idx": pa.array(np.arange(count), pa.int64()),
            "text": prompt_texts,
            "category": pa.array(["synthetic"] * count),
            "parent_id": pa.nulls(count, pa.string()),
            "mode": pa.array(["gpo"] * count),
            "instruction": pa.array([f"Write a prompt like number {i % 997}" for i in range(count)]),
            "attacker_model": pa.array(["attacker"] * count),
        }
    )


def _responses_table(
    round_: int, ids: list[str], response_ids: list[str], n: int, pool: pa.Array, rng: np.random.Generator
) -> pa.Table:
    count = len(response_ids)
    return pa.table(
        {
            "response_id": response_ids,
            "prompt_id": pa.array(np.repeat(np.array(ids, dtype=object), n).tolist(), pa.string()),
            "round": pa.array(np.full(count, round_), pa.int64()),
            "sample_index": pa.array(np.tile(np.arange(n), len(ids)), pa.int64()),
            "text": pool.take(pa.array(rng.integers(0, len(pool), count))),
            "finish_reason": pa.array(["stop"] * count),
            "prompt_tokens": pa.array(np.full(count, 40), pa.int64()),
            "completion_tokens": pa.array(np.full(count, 120), pa.int64()),
            "defender_model": pa.array(["defender"] * count),
            "sample_pass": pa.array(np.zeros(count, np.int64)),
        }
    )
