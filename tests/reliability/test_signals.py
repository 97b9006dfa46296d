"""SIGTERM and SIGHUP (what a scheduler, `docker stop` or a closed terminal send) stop a round like Ctrl-C: the
vLLM engine shuts down, no process of the command survives, one line says how to resume, the exit code is
128 + the signal, and the same command then finishes the round."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from data.check import check_store
from data.store import Store
from tests.conftest import REPO, TINY_DIR

pytestmark = pytest.mark.slow


def group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            pass
    return out


def survivors(pgid: int, wait_s: float = 15.0) -> list[psutil.Process]:
    """The group's processes still alive `wait_s` after its leader ended (the reaper's grace period is 8 s)."""
    deadline = time.monotonic() + wait_s
    while group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return group(pgid)


def engine_alive(pid: int) -> bool:
    try:
        return any(
            "EngineCore" in " ".join(c.cmdline()) for c in psutil.Process(pid).children(recursive=True)
        )
    except psutil.Error:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_cleanly_and_the_round_resumes(tmp_path, tiny_models, signum):
    args = [
        sys.executable, "-m", "generate.round", "--round", "1", "--set", f"run.dir={tmp_path / 'run'}",
        "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", "attacker.num_prompts=6",
        "--set", "defender.resample.max_samples=0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not engine_alive(proc.pid) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert engine_alive(proc.pid), "the round never started an engine"
    os.kill(
        proc.pid, signum
    )  # at once, while the engine starts up; to the main process only, as a scheduler does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    name = signal.Signals(signum).name
    ours = [line for line in err.splitlines() if line.startswith("sparring:")]
    assert ours == [f"sparring: stopped by {name}; re-run the same command to resume"], err[-3000:]
    assert "Traceback" not in err
    left = survivors(proc.pid)
    assert left == [], [p.cmdline() for p in left]  # no orphaned engine holding memory
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with Store.for_run(tmp_path / "run", read_only=True) as s:
        assert s.stage_done(1, "select") and check_store(s) == []


def test_a_sigkill_to_the_main_process_leaves_no_engine(tmp_path, tiny_models):
    """What the OOM killer or `kill -9 <pid>` does: no handler runs, and vLLM's engine core does not watch its
    parent. The command's reaper (`core.reaper`) stops the engine core and its worker."""
    args = [
        sys.executable, "-m", "generate.round", "--round", "1", "--set", f"run.dir={tmp_path / 'run'}",
        "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", "attacker.num_prompts=6",
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not engine_alive(proc.pid) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert engine_alive(proc.pid), "the round never started an engine"
    time.sleep(1)  # the engine core has spawned its worker
    engine = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() != "python"]
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    left = survivors(proc.pid)
    assert left == [], [p.cmdline() for p in left]
    assert engine and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in engine)
    assert "sparring: stopped" in err and "process(es) its command left behind" in err
