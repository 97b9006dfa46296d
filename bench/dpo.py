"""DPO bench: `train.defender`'s settings vs TRL's `DPOTrainer` with its defaults, same data, batch and LoRA.

    python -m bench.dpo                           # CPU: the tiny policy, a few steps (a plumbing check, not MFU)
    python -m bench.dpo --shapes 0.5b 7b          # GPU: random-init Qwen2.5-0.5B/7B-shaped policies (bf16)

Every variant trains a fresh LoRA (our `train_defender.lora`) on a fresh random model of the shape, over the
same synthetic preference pairs (`--prompt-tokens` + `--response-tokens` per side), for `--steps` optimizer
steps of `--batch` pairs:
- `trl default`: `DPOTrainer` + `DPOConfig(output_dir, per_device_train_batch_size)` and nothing else (TRL 1.16's
  defaults: gradient checkpointing on, bf16, max_length 1024); the reference is the model with adapters off;
- `ours`: `train.defender.build_trainer` (what `train.defender` trains with), our config defaults, on the
  model handed in; no checkpoint is read and the final save is skipped;
- `ours + <override>`: the same with `--set`-style overrides of `train_defender`, e.g. precomputed reference
  log-probs or gradient checkpointing.

Throughput counts real tokens of chosen and rejected (each with its prompt). Time is trainer construction
(tokenisation, and for precomputed references the whole reference pass) plus training, after one warm-up
variant, so precomputing the reference is charged its full cost. MFU counts per trained token 4N for LoRA
(forward + activation gradients; no weight gradients of frozen weights) plus 2N for the reference forward,
N = the matrix-product parameters (decoder layers + LM head); recomputation under gradient checkpointing is not
counted (it is overhead, not useful work).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import random
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from bench.common import (
    H100_BF16_PEAK_TFLOPS,
    matmul_params,
    matmul_tflops,
    print_table,
    random_qwen,
    write_results,
)

log = logging.getLogger("bench.dpo")
REPO = Path(__file__).resolve().parents[1]

# (label, train_defender overrides) tried after the TRL baseline and our defaults, in this order.
VARIANTS: list[tuple[str, list[str]]] = [
    ("ours + precomputed ref", ["train_defender.precompute_ref_log_probs=true"]),
    ("ours + grad ckpt", ["train_defender.gradient_checkpointing=true"]),
]


def _import_defender() -> Any:
    """`train.defender`, importable where DuckDB is not installed (the lent GPU box): the bench opens no store."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        sys.modules["duckdb"] = types.ModuleType("duckdb")
    import train.defender

    return train.defender


def synthetic_pairs(tokenizer: Any, n: int, prompt_tokens: int, response_tokens: int, seed: int = 0) -> Any:
    """`n` preference rows of random words, cut to about `prompt_tokens` / `response_tokens` tokens each."""
    from datasets import Dataset

    from bench.scoring import _WORDS

    rng = random.Random(seed)

    def text(tokens: int) -> str:
        words = " ".join(rng.choices(_WORDS, k=tokens * 2))
        return tokenizer.decode(tokenizer(words, add_special_tokens=False)["input_ids"][:tokens])

    rows = [(text(prompt_tokens), text(response_tokens), text(response_tokens)) for _ in range(n)]
    table = pa.table(
        {
            "prompt": [[{"role": "user", "content": p}] for p, _, _ in rows],
            "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in rows],
            "rejected": [[{"role": "assistant", "content": r}] for _, _, r in rows],
        }
    )
    # An explicit fingerprint: hashing the table with dill fails on Python 3.12 + pyarrow 26 (the GPU box).
    return Dataset(table, fingerprint=f"bench-dpo-{n}-{prompt_tokens}-{response_tokens}-{seed}")


def tokens_per_pair(tokenizer: Any, dataset: Any) -> float:
    """Mean real tokens a pair costs: prompt + chosen and prompt + rejected, tokenised as TRL does."""
    from train.common import prompt_completion_ids

    prompts = [row["prompt"][0]["content"] for row in dataset]
    chosen = prompt_completion_ids(tokenizer, prompts, [row["chosen"][0]["content"] for row in dataset])
    rejected = prompt_completion_ids(tokenizer, prompts, [row["rejected"][0]["content"] for row in dataset])
    total = sum(
        len(p) + len(c)
        for side in (chosen, rejected)
        for p, c in zip(side["prompt_ids"], side["completion_ids"], strict=True)
    )
    return total / len(dataset)


def tiny_tokenizer(tiny_dir: str) -> Any:
    from transformers import AutoTokenizer

    from core.tiny_models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny:policy", tiny_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def fresh_model(shape: str, device: str, tokenizer: Any, tiny_dir: str) -> Any:
    """A random-init policy of `shape` (bf16 on GPU); `tiny` is the repo's tiny policy, as a round loads it."""
    if shape == "tiny":
        from transformers import AutoModelForCausalLM

        from core.tiny_models import resolve_model

        model = AutoModelForCausalLM.from_pretrained(
            resolve_model("tiny:policy", tiny_dir), dtype=torch.float32
        )
    else:
        model = random_qwen(shape, "causal_lm", device, torch.bfloat16 if device == "cuda" else torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    return model


STEP_ENDS: list[float] = []  # host clock at the end of each optimizer step of the variant running now
WARMUP_STEPS = 2  # steps left out of the steady-state rate (first-step allocations, kernel selection)


def _step_timer() -> Any:
    """A TrainerCallback recording when each optimizer step ends (device synchronised) into STEP_ENDS."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            STEP_ENDS.append(time.perf_counter())

    return StepTimer()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_trl_default(
    model: Any, tokenizer: Any, dataset: Any, lora: Any, batch: int, steps: int, out: str
) -> float:
    """TRL's DPOTrainer with its default DPOConfig (only output dir, batch, steps and no logging/saving set)."""
    from trl import DPOConfig, DPOTrainer

    from train.common import peft_lora_config

    start = time.perf_counter()
    args = DPOConfig(
        output_dir=out,
        per_device_train_batch_size=batch,
        max_steps=steps,
        report_to="none",
        save_strategy="no",
        **({} if torch.cuda.is_available() else {"bf16": False}),  # TRL's bf16 default refuses a CPU
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_lora_config(lora),
    )
    trainer.add_callback(_step_timer())
    trainer.train()
    _sync()
    seconds = time.perf_counter() - start
    del trainer
    return seconds


def run_ours(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    overrides: list[str],
    batch: int,
    steps: int,
    out: str,
    tiny_dir: str,
) -> float:
    """`train.defender.build_trainer` with our config (plus `overrides`) on the model handed in, trained as `_fit` does."""
    from core.config import load_config

    defender = _import_defender()
    cfg = load_config(
        None,
        [
            f"run.dir={out}",
            f"run.tiny_models_dir={tiny_dir}",
            f"train_defender.batch_size={batch}",
            f"train_defender.max_steps={steps}",
            "train_defender.save_steps=1000000",
            *overrides,
        ],
    )
    start = time.perf_counter()
    trainer = defender.build_trainer(cfg, model, tokenizer, dataset, Path(out) / "checkpoints")
    trainer.add_callback(_step_timer())
    trainer.train()
    _sync()
    return time.perf_counter() - start


def bench_shape(
    args: argparse.Namespace, shape: str, device: str, peak: float | None
) -> list[dict[str, Any]]:
    from core.config import load_config

    _import_defender()  # before anything imports data.store
    tokenizer = tiny_tokenizer(args.tiny_dir)
    pairs = args.batch * args.steps
    dataset = synthetic_pairs(tokenizer, pairs, args.prompt_tokens, args.response_tokens)
    per_pair = tokens_per_pair(tokenizer, dataset)
    lora = load_config(None, []).train_defender.lora
    probe = fresh_model(shape, device, tokenizer, args.tiny_dir)
    body, head = matmul_params(probe)
    n_params = body + (head or probe.get_input_embeddings().weight.numel())  # tied head: still one matmul
    del probe
    _free()
    flops_per_token = 6 * n_params  # LoRA: 4N policy (forward + activation grads) + 2N reference forward

    plan: list[tuple[str, list[str] | None]] = [("trl default", None), ("ours", [])]
    plan += [(label, sets) for label, sets in VARIANTS if label in args.variants or "all" in args.variants]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (CUDA context, kernels, tokeniser caches) with our path, a few steps, not timed.
        model = fresh_model(shape, device, tokenizer, args.tiny_dir)
        run_ours(
            model,
            tokenizer,
            dataset.select(range(args.batch * 2)),
            [],
            args.batch,
            2,
            tmp + "/w",
            args.tiny_dir,
        )
        del model
        _free()
        for label, sets in plan:
            model = fresh_model(shape, device, tokenizer, args.tiny_dir)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            STEP_ENDS.clear()
            try:
                if sets is None:
                    seconds = run_trl_default(
                        model, tokenizer, dataset, lora, args.batch, args.steps, f"{tmp}/{len(rows)}"
                    )
                else:
                    seconds = run_ours(
                        model,
                        tokenizer,
                        dataset,
                        sets,
                        args.batch,
                        args.steps,
                        f"{tmp}/{len(rows)}",
                        args.tiny_dir,
                    )
                error = None
            except torch.cuda.OutOfMemoryError as e:  # a setting that does not fit is a result, not a crash
                seconds, error = float("nan"), f"OOM: {str(e).splitlines()[0][:120]}"
            del model
            _free()
            tokens = per_pair * pairs
            tok_s = tokens / seconds
            timed_steps = len(STEP_ENDS) - 1 - WARMUP_STEPS
            steady = (
                per_pair * args.batch * timed_steps / (STEP_ENDS[-1] - STEP_ENDS[WARMUP_STEPS])
                if error is None and timed_steps > 0
                else float("nan")
            )
            row: dict[str, Any] = {
                "shape": shape,
                "variant": label,
                "overrides": sets,
                "batch": args.batch,
                "steps": args.steps,
                "tokens": round(tokens),
                "seconds": seconds,
                "tok_per_s": tok_s,
                "tflops": flops_per_token * tok_s / 1e12,
                "steady_tok_per_s": steady,
                "steady_tflops": flops_per_token * steady / 1e12,
                "error": error,
            }
            if device == "cuda":
                row["mfu_measured_peak"] = row["tflops"] / peak if peak else None
                row["mfu_h100_datasheet"] = row["tflops"] / H100_BF16_PEAK_TFLOPS
                row["steady_mfu_measured_peak"] = row["steady_tflops"] / peak if peak else None
                row["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            rows.append(row)
            log.info("%s %s: %.0f tok/s", shape, label, tok_s)
    base = rows[0]["tok_per_s"]
    for r in rows:
        r["vs_trl_default"] = r["tok_per_s"] / base
        r["params_matmul"] = n_params
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=None, help="tiny (CPU default), 0.5b, 7b (GPU default)")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step (our default batch_size)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--prompt-tokens", type=int, default=None)
    p.add_argument("--response-tokens", type=int, default=None)
    p.add_argument("--variants", nargs="*", default=["all"], help="labels from VARIANTS, or all")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the CPU box is shared)")
    p.add_argument("--tiny-dir", default=str(REPO / ".sparring" / "tiny-models"))
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    p.add_argument("--tag", default="", help="suffix of the results file name, e.g. the batch size")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "trl", "peft", "accelerate", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        import datasets

        datasets.disable_progress_bars()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device == "cuda"
    if not gpu:
        torch.set_num_threads(args.threads)
    shapes = args.shapes or (["0.5b", "7b"] if gpu else ["tiny"])
    args.steps = args.steps or (20 if gpu else 4)
    args.prompt_tokens = args.prompt_tokens or (128 if gpu else 32)
    args.response_tokens = args.response_tokens or (256 if gpu else 64)
    peak = matmul_tflops() if gpu else None

    rows: list[dict[str, Any]] = []
    for shape in shapes:
        log.info("DPO on the %s policy on %s, batch %d, %d steps", shape, device, args.batch, args.steps)
        rows += bench_shape(args, shape, device, peak)

    columns = ["shape", "variant", "batch", "tokens", "seconds", "tok_per_s", "vs_trl_default", "tflops"]
    columns += ["steady_tok_per_s"] + (
        ["mfu_measured_peak", "steady_mfu_measured_peak", "max_mem_gib"] if gpu else []
    )
    print_table(rows, columns, title=f"DPO (LoRA) on {device}")
    summary: dict[str, Any] = {"targets": {"vs_trl_default": 1.2, "mfu_7b_lora": 0.45}}
    for shape in shapes:
        mine = [r for r in rows if r["shape"] == shape and r["variant"].startswith("ours")]
        best = max(mine, key=lambda r: r["tok_per_s"] if r["error"] is None else -1.0)
        ours = next(r for r in mine if r["variant"] == "ours")
        summary[shape] = {
            "ours_vs_trl_default": ours["vs_trl_default"],
            "best_variant": best["variant"],
            "best_vs_trl_default": best["vs_trl_default"],
            "best_mfu_measured_peak": best.get("mfu_measured_peak"),
            "best_steady_mfu_measured_peak": best.get("steady_mfu_measured_peak"),
        }
    if gpu:
        summary["measured_matmul_tflops"] = peak
    params = {
        "shapes": shapes,
        "batch": args.batch,
        "steps": args.steps,
        "prompt_tokens": args.prompt_tokens,
        "response_tokens": args.response_tokens,
        "device": device,
        "flops_per_token": "6N (LoRA 4N + reference 2N), N = matmul params",
    }
    write_results("dpo" + (f"-{args.tag}" if args.tag else ""), params, rows, summary, args.out)


if __name__ == "__main__":
    main()
