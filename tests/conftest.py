"""Shared fixtures: the tiny models (built once, cached in .sparring/), configs pointed at a temp run dir,
and helpers to fill a store by hand so selection and training tests need no vLLM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_DIR = REPO / ".sparring" / "tiny-models"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    from core.tiny_models import build_tiny_models

    return build_tiny_models(TINY_DIR)


def make_config(run_dir: Path, *overrides: str):
    """The demo config, pointed at `run_dir`, with the tiny-model cache shared across tests."""
    from core.config import load_config

    return load_config(
        REPO / "configs" / "demo.yaml", [f"run.dir={run_dir}", f"run.tiny_models_dir={TINY_DIR}", *overrides]
    )


def run_cli(
    module: str, *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a Sparring command the way a user types it (`python -m ...`) from the repo root; `env` adds variables."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,  # its own process group, so a fault-injected SIGKILL takes vLLM's children too
    )
