"""Fault injection for the crash/resume tests: `SPARRING_FAULT=<point>` SIGKILLs the process at that point.

Points: `<stage>:commit` (inside a stage's transaction, after its rows are written, before COMMIT) for every
stage, and `<stage>:step<N>` in training after optimizer step N. A SIGKILL cannot be caught, so this is the
harshest interruption a pre-empted job can see. Unset in normal use; costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SPARRING_FAULT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
