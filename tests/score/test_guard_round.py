"""A full round scored by the tiny guard (`reward.kind: guard`), real vLLM on CPU, then the report of that run."""

from __future__ import annotations

import pytest

from data.check import check_store
from data.report import write_report
from data.store import Store
from tests.conftest import REPO, TINY_DIR, run_cli

pytestmark = pytest.mark.slow


def test_a_round_scored_by_the_guard_yields_pairs_and_a_report(tmp_path, tiny_models):
    run_dir = tmp_path / "run"
    sets = [
        "--config", str(REPO / "configs" / "demo.yaml"), "--set", f"run.dir={run_dir}",
        "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", "reward.kind=guard", "--set", "reward.model=tiny:guard",
        "--set", "attacker.num_prompts=8", "--set", "attacker.max_tokens=24", "--set", "defender.max_tokens=16",
    ]  # fmt: skip
    result = run_cli("generate.round", "--round", "1", *sets)
    assert result.returncode == 0, result.stderr[-3000:]
    with Store.for_run(run_dir, read_only=True) as store:
        guard = store.scalar("SELECT DISTINCT scorer FROM scores")
        values = [r[0] for r in store.execute("SELECT value FROM scores")]
        pairs = store.count("pairs", 1)
        prompts = {r[0] for r in store.execute("SELECT text FROM prompts WHERE round = 1")}
        assert check_store(store) == []
    assert guard.endswith("seed-0/guard") or guard == "tiny:guard"
    assert all(0.0 < v < 1.0 for v in values)  # P(safe)
    assert pairs > 0
    text = write_report(run_dir).read_text()
    assert f"An answer scored below 0.5 by {guard} is a defender failure" in text
    hardest = text.split("## Hardest prompts")[1].split("##")[0]
    assert any(p[:40] in hardest for p in prompts)  # the examples are the run's own prompts
