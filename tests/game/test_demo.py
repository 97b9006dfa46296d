"""`python -m game.play` (what `make demo` runs): two rounds with both players trained in between, real
vLLM/DuckDB/TRL on the tiny models. Round 2's vLLM must play with round 1's trained players (LoRA adapters)."""

from pathlib import Path

import pytest

from core.adapters import is_adapter
from data.check import check_store
from data.store import Store
from tests.conftest import REPO, TINY_DIR, run_cli

pytestmark = pytest.mark.slow

ROUND_STAGES = {"attack", "respond", "score", "resample", "select"}


def demo(run_dir: Path):
    return run_cli(
        "game.play",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--set", f"run.dir={run_dir}", "--set", f"run.tiny_models_dir={TINY_DIR}",
        "--set", "attacker.num_prompts=8", "--set", "attacker.max_tokens=16", "--set", "defender.max_tokens=16",
        "--set", "train_defender.max_steps=2", "--set", "train_attacker.max_steps=2",
    )  # fmt: skip


def test_two_rounds_chain_through_the_trained_models(tmp_path, tiny_models):
    run_dir = tmp_path / "demo"
    first = demo(run_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Sparring round 2" in first.stdout

    with Store.for_run(run_dir, read_only=True) as s:
        assert check_store(s) == []
        models = {r["role"]: r for r in s.rows("SELECT * FROM models WHERE round = 1")}
        rounds = {r["round"]: r for r in s.rows("SELECT * FROM rounds")}
        stages = {(r["round"], r["stage"]) for r in s.rows("SELECT round, stage FROM stage_log")}
        parents = s.rows(
            "SELECT p2.parent_id, p1.round AS parent_round FROM prompts p2 "
            "JOIN prompts p1 ON p1.prompt_id = p2.parent_id WHERE p2.round = 2"
        )
    base = str(tiny_models["policy"])
    # round 1 trained both players from the base; round 2 played with what they produced
    assert models["defender"]["parent"] == base and models["attacker"]["parent"] == base
    assert rounds[1]["defender_model"] == base and rounds[1]["attacker_model"] == base
    assert rounds[2]["defender_model"] == models["defender"]["path"]
    assert rounds[2]["attacker_model"] == models["attacker"]["path"]
    assert Path(models["defender"]["path"]).name == "stacked" and is_adapter(models["defender"]["path"])
    assert stages == {(1, s) for s in ROUND_STAGES | {"train_defender", "train_attacker"}} | {
        (2, s) for s in ROUND_STAGES
    }
    # round 2's prompts grew from round 1's prompts (its hard prompts)
    assert parents and all(p["parent_round"] == 1 for p in parents)

    # re-running the demo is a no-op: every stage is logged
    again = demo(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    with Store.for_run(run_dir, read_only=True) as s:
        assert {(r["round"], r["stage"]) for r in s.rows("SELECT round, stage FROM stage_log")} == stages
        assert s.scalar("SELECT count(*) FROM models") == 2
