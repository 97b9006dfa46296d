"""Fault injection for the crash/resume tests: `SPARRING_FAULT=<point>` SIGKILLs the process at that point.

Points: `<stage>:commit` (inside a stage's transaction, after its rows are written, before COMMIT) for every
stage, `<stage>:step<N>` in training after optimizer step N, and `<stage>:save` after training, before the
trained model is saved. A SIGKILL cannot be caught, so this is the
harshest interruption a pre-empted job can see. Unset in normal use; costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SPARRING_FAULT"


def point(name: str) -> None:
    """SIGKILL this process, and its whole process group when it leads one (vLLM's engine-core children die with
    it, as they do when a scheduler pre-empts the job; orphans would otherwise hold the GPU and the pipes)."""
    if os.environ.get(ENV) != name:
        return
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
