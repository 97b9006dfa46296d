"""Shared command-line plumbing: `--config/--set/--round` parsing and clean error exits."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import typing
from collections.abc import Callable
from typing import TypeVar

from core.config import SparringConfig, load_config
from core.errors import SparringError

T = TypeVar("T")
log = logging.getLogger("sparring")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one `sparring: error:` line (exit 2) like every other input mistake.

    argparse's default prints the whole usage block first; users and scripts grepping stderr get the same
    one-line shape as `SparringError`s instead, with a pointer to `--help`.
    """

    def error(self, message: str) -> typing.NoReturn:
        print(f"sparring: error: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def base_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the flags every Sparring command shares."""
    p = OneLineParser(description=description)
    p.add_argument(
        "--config", default="configs/demo.yaml", help="experiment YAML (default: configs/demo.yaml)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set defender.n=8 (repeatable)",
    )
    p.add_argument("--round", type=int, default=None, help="round number (1-based)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config and the models it names (local paths; Hub ids by name), print the plan; "
        "load and write nothing",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SparringConfig:
    return load_config(args.config, args.overrides)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Stopped(BaseException):
    """SIGTERM or SIGHUP (a scheduler, `docker stop`, a closed terminal), raised where the process is, so every
    `finally` runs as for Ctrl-C: vLLM engines shut down, open transactions roll back. Not a KeyboardInterrupt:
    libraries that catch that one (to retry, or to log and go on) must not swallow a stop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def main_guard(fn: Callable[[], T]) -> T:
    """Run a command; a `SparringError` or an OS error (permission, disk full) becomes one line on stderr and a
    non-zero exit code, no traceback. Ctrl-C,
    SIGTERM and SIGHUP stop it cleanly with one line and the conventional 128 + signal number."""
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _stop)
    try:
        return fn()
    except SparringError as e:
        print(f"sparring: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:  # permission, disk full, a path that cannot be made: what the system said, and where
        where = f": {e.filename}" if e.filename else ""
        print(
            f"sparring: error: {e.strerror or type(e).__name__}{where}; the store is unchanged",
            file=sys.stderr,
        )
        sys.exit(1)
    except (KeyboardInterrupt, Stopped) as e:
        signum = e.signum if isinstance(e, Stopped) else int(signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"sparring: stopped by {name}; re-run the same command to resume", file=sys.stderr)
        sys.exit(128 + signum)
