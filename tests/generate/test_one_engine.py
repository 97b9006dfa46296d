"""One GPU holds one vLLM engine: a round whose attacker and defender are different checkpoints (round 2 of
every trained game) must close the attacker's engine before the defender's starts. Counted from outside, as a
GPU would feel it: the engine-core processes (`VLLM::EngineCore`) alive under the round command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

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
    proc = subprocess.Popen(
        [sys.executable, "-m", "generate.round", *args],
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
    assert seen >= 1, "no engine-core process was ever seen: the probe is blind"
    assert most == 1, f"{most} vLLM engines were alive at once"
    assert "vLLM engine starts in this run: 2" in out  # attacker's, then defender's
