"""One GPU holds one vLLM engine: a round whose attacker and defender are different checkpoints (merged players,
or another attacker model) must close the attacker's engine before the defender's starts; and with the default
`vllm.serve_adapters` a whole game runs on one engine (on CPU, where it stays up through scoring and training).
Counted from outside, as a GPU would feel it: the engine-core processes (`VLLM::EngineCore`) alive under the
command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from core.adapters import adapter_rank, is_adapter
from data.check import check_store
from data.store import Store
from tests.conftest import REPO, TINY_DIR

pytestmark = pytest.mark.slow


def live_engines(pid: int) -> int:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    count = 0
    for child in children:
        try:
            if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
                count += 1
        except psutil.Error:
            pass
    return count


def test_never_two_engines_alive_at_once(tmp_path, tiny_models):
    attacker = tmp_path / "attacker"  # the same weights under another path: a second engine, as in round 2
    shutil.copytree(tiny_models["policy"], attacker)
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"), "--round", "1",
        "--set", f"run.dir={tmp_path / 'run'}", "--set", f"run.tiny_models_dir={TINY_DIR}",
        "--set", f"attacker.model={attacker}", "--set", "attacker.num_prompts=4", "--set", "defender.max_tokens=8",
        "--set", "attacker.max_tokens=16", "--set", "defender.resample.max_samples=0",
    ]  # fmt: skip
    out, most, seen = watch("generate.round", args)
    assert seen >= 1, "no engine-core process was ever seen: the probe is blind"
    assert most == 1, f"{most} vLLM engines were alive at once"
    assert "vLLM engine starts in this run: 2" in out  # attacker's, then defender's


def test_a_three_round_game_with_adapters_starts_one_engine(tmp_path, tiny_models):
    run = tmp_path / "run"
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"), "--set", f"run.dir={run}", "--set", "run.rounds=3",
        "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", "attacker.num_prompts=6",
        "--set", "attacker.max_tokens=16", "--set", "defender.max_tokens=8",
        "--set", "train_defender.max_steps=2", "--set", "train_attacker.max_steps=2",
    ]  # fmt: skip
    out, most, seen = watch("game.play", args)
    assert seen >= 1, "no engine-core process was ever seen: the probe is blind"
    assert most == 1, f"{most} vLLM engines were alive at once"
    starts = [int(n) for n in re.findall(r"round \d: (\d+) vLLM engine start", out)]
    assert starts == [1, 0, 0], out[-3000:]  # at most one per round; on CPU one for the game
    with Store.for_run(run, read_only=True) as s:
        assert check_store(s) == []
        players = s.rows("SELECT round, attacker_model, defender_model FROM rounds ORDER BY round")
    for row in players[1:]:  # rounds 2 and 3 played trained adapters, stacked one rank-16 LoRA per round
        for role in ("attacker", "defender"):
            assert is_adapter(row[f"{role}_model"]), row
            assert adapter_rank(row[f"{role}_model"]) == 16 * (row["round"] - 1)


def watch(module: str, args: list[str]) -> tuple[str, int, int]:
    """Run a command, counting its live engine-core processes every 50 ms: (output, most at once, seen)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    most, seen = 0, 0
    while proc.poll() is None:
        n = live_engines(proc.pid)
        most, seen = max(most, n), max(seen, n)
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out[-3000:]
    return out, most, seen
