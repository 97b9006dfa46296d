"""Demo wall time (issue 13): `make demo`'s 2-round game with players served as LoRA adapters on one engine,
against merged players, and against an older checkout of Sparring (today's code before the change).

    python -m bench.demo                                   # adapters vs merged, this checkout
    python -m bench.demo --baseline /path/to/old/checkout  # and the old code's `make demo`, same config

Each arm runs `python -m game.play --config configs/demo.yaml` (the README's demo) on a fresh run dir, in a
fresh process, `--repeats` times; reported: median wall seconds, vLLM engine starts (from the log), the ratio
to the baseline. The tiny models are built before timing starts, so no arm pays for them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, print_table, write_results

REPO = Path(__file__).resolve().parent.parent


def play(repo: Path, python: str, run_dir: Path, *sets: str) -> tuple[float, int, str]:
    args = [python, "-m", "game.play", "--config", "configs/demo.yaml", "--set", f"run.dir={run_dir}"]
    args += ["--set", f"run.tiny_models_dir={REPO / '.sparring' / 'tiny-models'}"]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    start = time.perf_counter()
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{repo}: the demo failed:\n{done.stderr[-3000:]}")
    log = done.stdout + done.stderr
    return seconds, len(re.findall(r"loading \S+ into vLLM", log)), log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="an older checkout to time the same demo in")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from core.tiny_models import build_tiny_models

    build_tiny_models(REPO / ".sparring" / "tiny-models")
    arms: list[tuple[str, Path, tuple[str, ...]]] = []
    if args.baseline:
        arms.append(("before (merged models, engine closed per stage)", Path(args.baseline), ()))
    arms += [
        ("merged players (vllm.serve_adapters=false)", REPO, ("vllm.serve_adapters=false",)),
        ("LoRA adapters on one engine (default)", REPO, ()),
    ]
    work = Path(tempfile.mkdtemp(prefix="sparring-demo-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        for name, repo, sets in arms:
            times, starts = [], 0
            for i in range(args.repeats):
                seconds, starts, _ = play(repo, sys.executable, work / f"{len(rows)}-{i}", *sets)
                times.append(seconds)
                print(f"{name}: {seconds:.1f} s, {starts} engine starts", flush=True)
            rows.append(
                {"arm": name, "seconds": round(median(times), 1), "engine_starts": starts, "runs": times}
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reference = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(reference / row["seconds"], 2)
    print_table(rows, ["arm", "seconds", "engine_starts", "speedup"])
    summary = {
        "speedup_vs_first_arm": rows[-1]["speedup"],
        "first_arm": rows[0]["arm"],
        "target": ">= 1.5x faster than before for the 2-round demo",
    }
    params = {"config": "configs/demo.yaml", "repeats": args.repeats, "baseline": args.baseline}
    write_results("demo", params, rows, summary, args.out)


if __name__ == "__main__":
    main()
