"""Scale bench: every CPU-side step of a round and its training run, on synthetic stores of 1k to 100k prompts.

    python -m bench.scale                          # N = 1k, 10k, 100k prompts per round (~10 minutes)
    python -m bench.scale --sizes 1000 --rounds 2  # a quick look

For each N, `bench.synthetic.fill_store` writes `--rounds` played rounds of N prompts × `--n` responses × one
scorer (the last round is the one measured; the others are its history), then each step below runs in a fresh
process on that store, timed, with the process's peak resident memory (interpreter and libraries included):

- `attack dedup`: the attack stage's de-duplication (`data.prompts.stored_keys` + a key check per new prompt,
  N new prompts against everything stored);
- `select`: `data.select.select_round` (hard prompts and pairs, in SQL);
- `attacker reward`: `train.attacker.ATTACKER.read` (its prompts, failure, novelty against the round and the
  whole history, the ESS-floored weights);
- `datasets`: the defender's pairs and the attacker's prompts as `datasets.Dataset`s (what the trainers read);
- `push --to-dir`, `data.check`, `data.report`: the commands, as functions, on the store.

Targets (issue 16): at N = 100k with 3 rounds of history, every step < 60 s and < 4 GiB, and no step more than
15× slower at 100k than at 10k. No vLLM, no model: the GPU-side stages scale with their engines.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results

LIMIT_S, LIMIT_GIB, LIMIT_GROWTH = 60.0, 4.0, 15.0


def _config(run_dir: Path) -> Any:
    from core.config import load_config

    return load_config(None, [f"run.dir={run_dir}"])


def step_dedup(run_dir: Path, round_: int) -> int:
    from bench.synthetic import texts
    from core.text import normalise
    from data.prompts import stored_keys
    from data.store import Store

    new = texts(_size(run_dir), seed=10_000 + round_)
    with Store.for_run(run_dir, read_only=True) as store:
        seen = stored_keys(store)
    kept = 0
    for text in new:  # the attack stage's check, per generated prompt
        key = normalise(text)
        if key not in seen:
            seen.add(key)
            kept += 1
    return kept


def step_select(run_dir: Path, round_: int) -> int:
    from bench.synthetic import SCORER
    from data.select import select_round
    from data.store import Store

    with Store.for_run(run_dir) as store:
        return select_round(store, _config(run_dir).select, round_, SCORER).rows


def step_attacker_reward(run_dir: Path, round_: int) -> int:
    from data.store import Store
    from train.attacker import ATTACKER

    with Store.for_run(run_dir, read_only=True) as store:
        return ATTACKER.read(store, _config(run_dir), round_).prompts.num_rows


def step_datasets(run_dir: Path, round_: int) -> int:
    import pyarrow as pa
    from datasets import Dataset

    from bench.synthetic import SCORER
    from data import sql
    from data.store import Store
    from train.defender import DEFENDER, preference_dataset

    with Store.for_run(run_dir, read_only=True) as store:
        pairs = preference_dataset(DEFENDER.read(store, _config(run_dir), round_))
        prompts = store.arrow(sql.ATTACKER_PROMPTS, {"round": round_, "scorer": SCORER})
    attacker = Dataset(
        pa.table({"instruction": prompts.column("instruction"), "text": prompts.column("text")})
    )
    return len(pairs) + len(attacker)


def step_push(run_dir: Path, round_: int) -> int:
    from data.push import push_round

    target = run_dir.parent / "export"
    shutil.rmtree(target, ignore_errors=True)
    push_round(_config(run_dir), round_, to_dir=target)
    return sum(1 for _ in target.rglob("*.parquet"))


def step_check(run_dir: Path, round_: int) -> int:
    from data.check import check_store
    from data.store import Store

    with Store.for_run(run_dir, read_only=True) as store:
        problems = check_store(store)
    if problems:
        raise RuntimeError(f"data.check found {problems}")
    return 0


def step_report(run_dir: Path, round_: int) -> int:
    from data.report import write_report

    write_report(run_dir, run_dir.parent / "report")
    return 1


STEPS: dict[str, Callable[[Path, int], int]] = {
    "attack dedup": step_dedup,
    "select": step_select,
    "attacker reward": step_attacker_reward,
    "datasets": step_datasets,
    "push --to-dir": step_push,
    "data.check": step_check,
    "data.report": step_report,
}


def _size(run_dir: Path) -> int:
    return int((run_dir / "N").read_text())


def _child(name: str, run_dir: str, round_: int, queue: Any) -> None:
    import logging

    import datasets

    logging.disable(logging.WARNING)
    datasets.disable_progress_bars()
    started = time.perf_counter()
    try:
        out = STEPS[name](Path(run_dir), round_)
        error = None
    except Exception as e:  # reported in the table, not raised: the other steps still run
        out, error = 0, f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - started
    queue.put({"seconds": seconds, "peak_gib": _peak_rss_gib(), "result": out, "error": error})


def _peak_rss_gib() -> float:
    """This process's peak resident set (VmHWM). Not `getrusage`: its ru_maxrss survives exec, so a spawned
    child would report the parent's peak when that is higher."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(name: str, run_dir: Path, round_: int) -> dict[str, Any]:
    """Run one step in a fresh process (so its peak memory is its own) and return what it reported."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(run_dir), round_, queue))
    proc.start()
    report = queue.get()
    proc.join()
    return report


def build(size: int, rounds: int, n: int, root: Path) -> tuple[Path, float]:
    from bench.synthetic import fill_store

    run_dir = root / f"n{size}" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "N").write_text(str(size))
    started = time.perf_counter()
    fill_store(_config(run_dir), rounds, size, n)
    return run_dir, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="prompts per round")
    p.add_argument("--rounds", type=int, default=4, help="rounds in the store; the last is measured")
    p.add_argument("--n", type=int, default=4, help="responses per prompt")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS), metavar="STEP")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = p.parse_args()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sparring-scale-") as tmp:
        for size in args.sizes:
            run_dir, fill_s = build(size, args.rounds, args.n, Path(tmp))
            print(f"N={size}: store of {args.rounds} rounds written in {fill_s:.0f} s", flush=True)
            for name in args.steps:
                got = measure(name, run_dir, args.rounds)
                rows.append({"step": name, "prompts": size, **got})
                print(
                    f"  {name}: {got['seconds']:.2f} s, {got['peak_gib']:.2f} GiB {got['error'] or ''}",
                    flush=True,
                )
            shutil.rmtree(run_dir.parent)
    summary = _summary(rows, args.sizes)
    print_table(rows, ["step", "prompts", "seconds", "peak_gib", "error"], title="scale: CPU-side steps")
    print_table(summary["steps"], title="growth and targets at the largest N")
    write_results(
        "scale",
        {"sizes": args.sizes, "rounds": args.rounds, "responses_per_prompt": args.n},
        rows,
        summary,
        args.out,
    )


def _summary(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Per step: the growth from the second-largest to the largest N and whether the targets are met there."""
    largest = max(sizes)
    below = max((s for s in sizes if s < largest), default=None)
    table = []
    for name in dict.fromkeys(r["step"] for r in rows):
        at = {r["prompts"]: r for r in rows if r["step"] == name}
        top = at[largest]
        growth = top["seconds"] / at[below]["seconds"] if below else None
        table.append(
            {
                "step": name,
                f"seconds at {largest}": top["seconds"],
                f"GiB at {largest}": top["peak_gib"],
                "growth": growth,
                "met": top["error"] is None
                and top["seconds"] < LIMIT_S
                and top["peak_gib"] < LIMIT_GIB
                and (growth is None or growth <= LIMIT_GROWTH),
            }
        )
    return {
        "steps": table,
        "all_met": all(t["met"] for t in table),
        "growth_from": below,
        "growth_to": largest,
    }


if __name__ == "__main__":
    main()
