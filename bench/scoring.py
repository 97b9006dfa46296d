"""Scoring bench: our `RewardModelScorer` vs a naive one-pair-at-a-time transformers loop on the same pairs.

    python -m bench.scoring                      # CPU: the tiny reward model, loaded the way a round loads it
    python -m bench.scoring --shapes 0.5b 7b     # GPU: random-init Qwen2.5-0.5B/7B-shaped reward models (bf16)

Reports pairs/s, the speed-up over the naive loop (targets: >=5x on CPU), padding efficiency (real tokens /
padded tokens, target >=0.9) and, on a GPU, achieved FLOP/s (2 x matmul params x real tokens) over the bf16
peak. A `forward only` row times the same padded batches with everything but the model's forward removed:
the gap between it and `ours` is the scorer's own host-side overhead.

GPU-shaped models are built from config on the device (never downloaded) and put into a scorer made by the
real constructor from the tiny model, so only the weights differ from what a round runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import (
    H100_BF16_PEAK_TFLOPS,
    matmul_params,
    matmul_tflops,
    median,
    print_table,
    random_qwen,
    write_results,
)

log = logging.getLogger("bench.scoring")
REPO = Path(__file__).resolve().parents[1]

_WORDS = (
    "the a to of and in is that it for you this can with be on not are your as or will help how what an "
    "if do one make use safe step answer question first second third please write another more specific "
    "request because could cause harm here sure steps asked topic similar harder different people data "
    "system time way work example code file model way number should would about which there their"
).split()


def make_pairs(n: int, min_words: int, max_words: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` (prompt, response) pairs: seed prompts and random-word responses of uniformly spread lengths."""
    rng = random.Random(seed)
    seeds = [
        json.loads(line)["text"]
        for line in (REPO / "data" / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    prompts = [seeds[i % len(seeds)] for i in range(n)]
    responses = [" ".join(rng.choices(_WORDS, k=rng.randint(min_words, max_words))) for _ in range(n)]
    return prompts, responses


def build_scorer(shape: str, device: str, batch_tokens: int, tiny_dir: str) -> Any:
    """A `RewardModelScorer` from the real constructor; for GPU shapes its model is swapped for a random one."""
    from core.config import load_config
    from score.reward_model import RewardModelScorer

    dtype = "float32" if device == "cpu" else "bfloat16"
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"run.tiny_models_dir={tiny_dir}",
            f"reward.device={device}",
            f"reward.dtype={dtype}",
            f"reward.batch_tokens={batch_tokens}",
        ],
    )
    scorer = RewardModelScorer(cfg)
    if shape != "tiny":
        scorer.model = random_qwen(shape, "reward", device, torch.bfloat16)
        scorer.model.config.pad_token_id = scorer.tokenizer.pad_token_id
        scorer.model.eval()
        scorer.name = f"random:{shape}"
        if device == "cuda":
            torch.cuda.empty_cache()
    return scorer


@torch.inference_mode()
def naive_scores(
    model: Any, tokenizer: Any, prompts: list[str], responses: list[str], max_length: int
) -> list[float]:
    """What a hand-written script does: render, tokenize and score one pair at a time."""
    device = next(model.parameters()).device
    values = []
    for p, r in zip(prompts, responses, strict=True):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_length]
        values.append(float(model(input_ids=ids.to(device)).logits[0, 0]))
    return values


@torch.inference_mode()
def forward_only_seconds(scorer: Any, prompts: list[str], responses: list[str]) -> float:
    """Seconds of the model forwards alone over the scorer's own padded batches (already on the device)."""
    encoded = scorer.encode(prompts, responses)
    batches = [(ids.to(scorer.device), mask.to(scorer.device)) for _, ids, mask in scorer.batches(encoded)]
    _sync(scorer.device)
    start = time.perf_counter()
    for ids, mask in batches:
        scorer._forward(ids, mask)
    _sync(scorer.device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_shape(
    shape: str,
    device: str,
    pairs: int,
    naive_pairs: int,
    budgets: list[int],
    min_words: int,
    max_words: int,
    tiny_dir: str,
    peak_tflops: float | None,
    repeats: int,
) -> list[dict[str, Any]]:
    prompts, responses = make_pairs(pairs, min_words, max_words)
    started = time.perf_counter()
    scorer = build_scorer(shape, device, budgets[0], tiny_dir)
    log.info("%s: scorer built in %.1fs", shape, time.perf_counter() - started)
    body, _ = matmul_params(scorer.model)
    rows: list[dict[str, Any]] = []

    def row(
        method: str, budget: int | None, n: int, seconds: float, real: int, padded: int
    ) -> dict[str, Any]:
        tflops = 2 * body * real / seconds / 1e12
        out = {
            "shape": shape,
            "method": method,
            "batch_tokens": budget,
            "pairs": n,
            "seconds": seconds,
            "pairs_per_s": n / seconds,
            "real_tokens": real,
            "padding_eff": real / padded if padded else 1.0,
            "tflops": tflops,
        }
        if device == "cuda":
            out["frac_h100_peak"] = tflops / H100_BF16_PEAK_TFLOPS
            out["frac_measured_peak"] = tflops / peak_tflops if peak_tflops else None
        return out

    # Naive loop on a subset (it is slow by design); its pairs/s is what the speed-up is measured against.
    # Naive and ours alternate `repeats` times and the median is kept: the CPU box is shared.
    k = min(naive_pairs, pairs)
    sub_p, sub_r = prompts[:k], responses[:k]
    naive_scores(scorer.model, scorer.tokenizer, sub_p[:4], sub_r[:4], scorer.max_length)  # warm-up
    ours_subset = scorer.score(sub_p, sub_r)  # also the warm-up of our path
    naive_times: list[float] = []
    ours_times: dict[int, list[float]] = {b: [] for b in budgets}
    stats: dict[int, dict[str, int]] = {}
    for _ in range(repeats):
        _sync(scorer.device)
        start = time.perf_counter()
        naive = naive_scores(scorer.model, scorer.tokenizer, sub_p, sub_r, scorer.max_length)
        naive_times.append(time.perf_counter() - start)
        log.info("%s: naive loop over %d pairs %.1fs", shape, k, naive_times[-1])
        for budget in budgets:
            scorer.batch_tokens = budget
            scorer.stats = {"real_tokens": 0, "padded_tokens": 0, "truncated": 0}
            _sync(scorer.device)
            start = time.perf_counter()
            values = scorer.score(prompts, responses)
            ours_times[budget].append(time.perf_counter() - start)
            assert all(math.isfinite(v) for v in values)
            stats[budget] = dict(scorer.stats)
            log.info("%s: ours, budget %d, %d pairs %.1fs", shape, budget, pairs, ours_times[budget][-1])
    naive_tokens = sum(len(ids) for ids in scorer.encode(sub_p, sub_r))
    rows.append(row("naive loop", None, k, median(naive_times), naive_tokens, naive_tokens))
    diff = max(abs(a - b) for a, b in zip(naive, ours_subset, strict=True))
    scale = max(abs(v) for v in naive) or 1.0
    for budget in budgets:
        real, padded = stats[budget]["real_tokens"], stats[budget]["padded_tokens"]
        rows.append(row("ours", budget, pairs, median(ours_times[budget]), real, padded))
        scorer.batch_tokens = budget
        fwd = median([forward_only_seconds(scorer, prompts, responses) for _ in range(repeats)])
        rows.append(row("forward only", budget, pairs, fwd, real, padded))
    naive_rate = rows[0]["pairs_per_s"]
    for r in rows:
        r["speedup_vs_naive"] = r["pairs_per_s"] / naive_rate
        r["max_abs_diff_vs_naive"] = diff if r["method"] == "ours" else None
        r["rel_diff_vs_naive"] = diff / scale if r["method"] == "ours" else None
    scorer.close()
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=None, help="tiny (CPU default), 0.5b, 7b (GPU default)")
    p.add_argument("--pairs", type=int, default=None)
    p.add_argument("--naive-pairs", type=int, default=None, help="pairs timed with the naive loop")
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="reward.batch_tokens values")
    p.add_argument("--min-words", type=int, default=8)
    p.add_argument("--max-words", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="alternating timed runs; the median is kept")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the CPU box is shared)")
    p.add_argument("--tiny-dir", default=str(REPO / ".sparring" / "tiny-models"))
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    p.add_argument("--tag", default="", help="suffix of the results file name, e.g. short")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device == "cuda"
    if not gpu:
        torch.set_num_threads(args.threads)
    shapes = args.shapes or (["0.5b", "7b"] if gpu else ["tiny"])
    pairs = args.pairs or (4096 if gpu else 512)
    naive_pairs = args.naive_pairs or (256 if gpu else pairs)
    budgets = args.budgets or ([8192, 32768] if gpu else [8192])
    max_words = args.max_words or (700 if gpu else 200)
    peak = matmul_tflops() if gpu else None

    rows: list[dict[str, Any]] = []

    def report(done: list[str]) -> None:
        """Table + JSON of the shapes done so far (written after each, so a cut-off run keeps its results)."""
        columns = ["shape", "method", "batch_tokens", "pairs", "seconds", "pairs_per_s", "speedup_vs_naive"]
        columns += ["padding_eff", "tflops"] + (["frac_h100_peak", "frac_measured_peak"] if gpu else [])
        print_table(rows, columns, title=f"scoring on {device}")
        ours = [r for r in rows if r["method"] == "ours"]
        summary: dict[str, Any] = {
            "speedup_vs_naive_min": min(r["speedup_vs_naive"] for r in ours),
            "padding_eff_min": min(r["padding_eff"] for r in ours),
            "max_rel_diff_vs_naive": max(r["rel_diff_vs_naive"] for r in ours),
            "targets": {"speedup_vs_naive": 5.0, "padding_eff": 0.9},
        }
        if gpu:
            summary["measured_matmul_tflops"] = peak
            summary["peak_tflops_used"] = H100_BF16_PEAK_TFLOPS
            summary["best_frac_h100_peak"] = {
                s: max(r["frac_h100_peak"] for r in ours if r["shape"] == s) for s in done
            }
            summary["best_frac_measured_peak"] = {
                s: max(r["frac_measured_peak"] for r in ours if r["shape"] == s) for s in done
            }
            summary["targets"]["frac_peak"] = 0.5
        summary["met"] = {
            "speedup_vs_naive": summary["speedup_vs_naive_min"] >= 5.0,
            "padding_eff": summary["padding_eff_min"] >= 0.9,
        }
        params = {
            "shapes": done,
            "pairs": pairs,
            "naive_pairs": naive_pairs,
            "budgets": budgets,
            "words": [args.min_words, max_words],
            "repeats": args.repeats,
            "device": device,
            "torch_threads": torch.get_num_threads(),
        }
        write_results("scoring" + (f"-{args.tag}" if args.tag else ""), params, rows, summary, args.out)

    for shape in shapes:
        log.info("scoring %d pairs with the %s reward model on %s", pairs, shape, device)
        rows += bench_shape(
            shape,
            device,
            pairs,
            naive_pairs,
            budgets,
            args.min_words,
            max_words,
            args.tiny_dir,
            peak,
            args.repeats,
        )
        report(shapes[: shapes.index(shape) + 1])


if __name__ == "__main__":
    main()
