"""Chaos run (issue 15): a 2-round game with training, killed at random moments, resumed to the end each time.

    python -m bench.chaos                  # 20 trials (~1 hour on 2 CPU cores)
    python -m bench.chaos --trials 2       # a quick look

One uninterrupted game is the reference. Each trial plays the same game (same config and seed, its own run dir)
as `python -m game.play` in a session of its own, and at a moment drawn from a fixed-seed generator sends SIGKILL
or SIGTERM to the main process alone (the OOM killer, `kill <pid>`, a scheduler) or to its whole process group
(Ctrl-C-like, `docker stop` of the job). Then it checks that no process of that session survives the kill, re-runs
the same command to the end, and compares the final store with the reference: `data.check` clean; prompts,
responses, scores, hard prompts, pairs and attacker rewards equal row for row; the models' lineage (round, role,
paths and parent relative to the run dir, the digest of the training inputs, steps) equal. The train loss of a
run resumed from a checkpoint is compared to 1e-4 (its mean over the logged steps is rebuilt from the log).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import print_table, write_results

REPO = Path(__file__).resolve().parent.parent
SETTINGS = (
    "attacker.num_prompts=8", "attacker.max_tokens=16", "defender.max_tokens=16", "run.rounds=2",
)  # fmt: skip
TABLES = {
    "prompts": "SELECT * FROM prompts ORDER BY prompt_id",
    "responses": "SELECT * FROM responses ORDER BY response_id",
    "scores": "SELECT * FROM scores ORDER BY response_id, scorer",
    "hard_prompts": "SELECT * FROM hard_prompts ORDER BY round, prompt_id",
    "pairs": "SELECT * FROM pairs ORDER BY round, prompt_id",
    "attacker_rewards": "SELECT * FROM attacker_rewards ORDER BY round, prompt_id",
}
LINEAGE = "SELECT round, role, path, adapter_path, parent, details FROM models ORDER BY round, role"
STAGES = ("attack", "respond", "score", "resample", "select", "train_defender", "train_attacker")


def command(run_dir: Path, tiny_dir: Path) -> list[str]:
    sets = [f"run.dir={run_dir}", f"run.tiny_models_dir={tiny_dir}", *SETTINGS]
    return [sys.executable, "-m", "game.play", "--config", str(REPO / "configs/demo.yaml")] + [
        a for s in sets for a in ("--set", s)
    ]


def start(run_dir: Path, tiny_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            command(run_dir, tiny_dir), cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True
        )


def session(sid: int) -> list[psutil.Process]:
    """The live processes of session `sid` (the command's, since it was started as a session leader)."""
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return out


def progress(run_dir: Path) -> str:
    """The first stage not yet in the store ("round 2 respond"), read-only; what the kill interrupted."""
    from data.store import Store, store_path

    if not store_path(run_dir).is_file():
        return "round 1 attack (no store yet)"
    with Store.for_run(run_dir, read_only=True) as store:
        for round_ in (1, 2):
            done = store.done_stages(round_)
            for stage in STAGES[:5] if round_ == 2 else STAGES:
                if stage not in done:
                    return f"round {round_} {stage}"
    return "done"


def contents(run_dir: Path) -> dict[str, Any]:
    """What must match the reference, with the run dir replaced by `<run>`."""
    from data.check import check_store
    from data.store import Store

    with Store.for_run(run_dir, read_only=True) as store:
        problems = check_store(store)
        tables = {name: [_relative(row, run_dir) for row in store.rows(q)] for name, q in TABLES.items()}
        models = []
        for row in store.rows(LINEAGE):
            details = json.loads(row.pop("details"))
            row = _relative(row, run_dir)
            row.update(inputs=details.get("inputs"), steps=details.get("steps"))
            models.append((row, details.get("train_loss")))
    return {"problems": problems, "tables": tables, "models": models}


def _relative(row: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Model paths inside the run dir (prompts' attacker, responses' defender, lineage) made relative to it."""
    return {k: v.replace(str(run_dir), "<run>") if isinstance(v, str) else v for k, v in row.items()}


def compare(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    diffs = [f"data.check: {p}" for p in got["problems"]]
    diffs += [f"{name} differs" for name in TABLES if got["tables"][name] != want["tables"][name]]
    if [m for m, _ in got["models"]] != [m for m, _ in want["models"]]:
        diffs.append("models' lineage differs")
    for (_, loss), (_, ref) in zip(got["models"], want["models"], strict=False):
        if loss is None or ref is None or abs(loss - ref) > 1e-4 * max(1.0, abs(ref)):
            diffs.append(f"train_loss {loss} != {ref}")
    return diffs


def trial(
    index: int, plan: dict[str, Any], work: Path, tiny_dir: Path, reference: dict[str, Any]
) -> dict[str, Any]:
    run_dir, log = work / f"trial-{index}", work / f"trial-{index}.log"
    proc = start(run_dir, tiny_dir, log)
    time.sleep(plan["at_s"])
    row: dict[str, Any] = {"trial": index, "signal": plan["signal"], "to": plan["to"], "at_s": plan["at_s"]}
    if proc.poll() is not None:
        row.update(killed_at="finished before the kill", exit=proc.returncode, orphans=0)
    else:
        signum = signal.Signals[plan["signal"]]
        if plan["to"] == "group":
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        try:
            row["exit"] = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            row["exit"] = f"hung: SIGKILLed {proc.wait()}"
        deadline = time.monotonic() + 20  # the reaper's grace period and a margin
        while session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = session(proc.pid)
        row.update(killed_at=progress(run_dir), orphans=len(left))
        for p in left:  # never leave them running for the next trial
            p.kill()
    resumed = start(run_dir, tiny_dir, log)
    row["resume_exit"] = resumed.wait(timeout=1800)
    diffs = compare(contents(run_dir), reference) if row["resume_exit"] == 0 else ["resume failed"]
    row.update(equal=not diffs, differences="; ".join(diffs))
    if not diffs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--window", type=float, nargs=2, default=(0.0, 0.97), metavar=("FROM", "TO"),
        help="kill moments drawn from this part of the reference game's wall time (fractions)",
    )  # fmt: skip
    parser.add_argument("--tag", default="", help="suffix of the results file (chaos<tag>-<device>.json)")
    parser.add_argument("--work", default=None, help="where the run dirs go (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="results folder (default: bench/results)")
    args = parser.parse_args()

    from core.tiny_models import build_tiny_models

    tiny_dir = REPO / ".sparring" / "tiny-models"
    build_tiny_models(tiny_dir)
    work = Path(args.work or tempfile.mkdtemp(prefix="sparring-chaos-"))
    work.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    ref = start(work / "reference", tiny_dir, work / "reference.log")
    if ref.wait() != 0:
        sys.exit(f"the reference game failed; see {work / 'reference.log'}")
    game_s = time.perf_counter() - started
    reference = contents(work / "reference")
    print(f"reference game: {game_s:.0f} s", flush=True)

    rng = random.Random(args.seed)
    rows = []
    for i in range(args.trials):
        plan = {
            "signal": rng.choice(["SIGKILL", "SIGTERM"]),
            "to": rng.choice(["process", "group"]),
            "at_s": round(rng.uniform(max(2.0, args.window[0] * game_s), args.window[1] * game_s), 1),
        }
        rows.append(trial(i, plan, work, tiny_dir, reference))
        print(json.dumps(rows[-1]), flush=True)

    summary = {
        "trials": len(rows),
        "reference_game_s": round(game_s, 1),
        "faults_survived": sum(
            r["resume_exit"] == 0 for r in rows if r["killed_at"] != "finished before the kill"
        ),
        "stores_equal": sum(r["equal"] for r in rows),
        "orphans_left": sum(r["orphans"] for r in rows),
        "kill_points": sorted({r["killed_at"] for r in rows}),
    }
    params = {
        "trials": args.trials,
        "seed": args.seed,
        "window": list(args.window),
        "settings": list(SETTINGS),
        "config": "configs/demo.yaml",
    }
    print_table(
        rows, ["trial", "signal", "to", "at_s", "killed_at", "exit", "orphans", "resume_exit", "equal"]
    )
    print(json.dumps(summary, indent=2))
    write_results(f"chaos{args.tag}", params, rows, summary, args.out)


if __name__ == "__main__":
    main()
