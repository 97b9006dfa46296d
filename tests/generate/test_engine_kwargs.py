"""Scale-out settings reach the engines: the `vllm.*` config keys become `vllm.LLM(...)` keyword arguments
(checked without loading vLLM: a stand-in `vllm` module records what `Engines` passes), and the defender's
training arguments carry no parallelism of their own, so `accelerate launch` (DDP, FSDP, DeepSpeed) decides it."""

from __future__ import annotations

import sys
import types

import pytest

from generate.engine import Engines, engine_kwargs
from tests.conftest import make_config

SCALE_OUT = (
    "vllm.tensor_parallel_size=4",
    "vllm.pipeline_parallel_size=2",
    "vllm.distributed_executor_backend=ray",
    "vllm.extra={quantization: fp8, max_num_seqs: 512, enable_prefix_caching: true}",
)


def test_scale_out_keys_become_llm_kwargs(tmp_path):
    cfg = make_config(tmp_path, *SCALE_OUT)
    kwargs = engine_kwargs("org/model", cfg.vllm, seed=7)
    assert kwargs["model"] == "org/model" and kwargs["seed"] == 7
    assert kwargs["tensor_parallel_size"] == 4
    assert kwargs["pipeline_parallel_size"] == 2
    assert kwargs["distributed_executor_backend"] == "ray"
    assert kwargs["quantization"] == "fp8"  # `extra` passes through verbatim
    assert kwargs["enable_prefix_caching"] is True
    assert kwargs["max_num_seqs"] == 512
    assert "enable_chunked_prefill" not in kwargs  # only the CPU backend needs it off


def test_defaults_leave_the_backend_to_vllm(tmp_path):
    kwargs = engine_kwargs("m", make_config(tmp_path).vllm, seed=0)
    assert kwargs["tensor_parallel_size"] == 1 and kwargs["pipeline_parallel_size"] == 1
    assert "distributed_executor_backend" not in kwargs


def test_cpu_turns_chunked_prefill_off_unless_extra_says_otherwise(tmp_path):
    assert engine_kwargs("m", make_config(tmp_path).vllm, 0, on_cpu=True)["enable_chunked_prefill"] is False
    cfg = make_config(tmp_path, "vllm.extra={enable_chunked_prefill: true}")
    assert engine_kwargs("m", cfg.vllm, 0, on_cpu=True)["enable_chunked_prefill"] is True


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` package whose `LLM` records its keyword arguments (on a GPU platform)."""
    made: list[dict] = []

    class LLM:
        def __init__(self, **kwargs):
            made.append(kwargs)

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM  # type: ignore[attr-defined]
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return made


def test_engines_pass_exactly_engine_kwargs_to_llm(tmp_path, fake_vllm):
    cfg = make_config(tmp_path, *SCALE_OUT)
    pool = Engines(cfg.vllm, seed=3)
    pool.get("org/attacker")
    pool.get("org/attacker")  # cached: one engine per model
    pool.get("org/defender")
    assert fake_vllm == [
        engine_kwargs("org/attacker", cfg.vllm, 3),
        engine_kwargs("org/defender", cfg.vllm, 3),
    ]
    pool._live = None  # the stand-in has no engine core to shut down


def test_adapters_get_room_on_the_engine_and_a_gpu_engine_makes_way_for_the_scorer(tmp_path, fake_vllm):
    cfg = make_config(tmp_path)
    pool = Engines(cfg.vllm, seed=3, lora_rank=20)
    pool.get("org/base")
    assert fake_vllm[-1]["enable_lora"] is True and fake_vllm[-1]["max_lora_rank"] == 32
    assert fake_vllm[-1]["max_loras"] == 2  # the attacker's and the defender's adapters
    pool.release()  # on a GPU: the scorer or the trainer needs the memory, so the engine goes
    assert pool._live is None
    pool.get("org/base")
    assert pool.starts == 2
    pool._live = None
