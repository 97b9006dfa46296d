"""SIGKILL in the middle of each stage of a round, resume, and get exactly what an uninterrupted run gets.

Also shows reproducibility: the interrupted run and the reference run live in different directories and
must hold identical prompts, responses and scores (same config and seed, CPU).
"""

import signal

import pytest

from data.check import check_store
from data.store import Store
from tests.conftest import REPO, TINY_DIR, run_cli

pytestmark = pytest.mark.slow

STAGE_TABLES = {
    "attack": ("prompts",),
    "respond": ("responses",),
    "score": ("scores",),
    "select": ("hard_prompts", "pairs"),
}
TABLES = {
    "prompts": "SELECT * FROM prompts WHERE round = 1 ORDER BY prompt_id",
    "responses": "SELECT * FROM responses ORDER BY response_id",
    "scores": "SELECT * FROM scores ORDER BY response_id",
    "hard_prompts": "SELECT * FROM hard_prompts ORDER BY prompt_id",
    "pairs": "SELECT * FROM pairs ORDER BY prompt_id",
}


def play(run_dir, fault=None):
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"), "--round", "1",
        "--set", f"run.dir={run_dir}", "--set", f"run.tiny_models_dir={TINY_DIR}",
        "--set", "attacker.num_prompts=8", "--set", "attacker.max_tokens=16", "--set", "defender.max_tokens=16",
    ]  # fmt: skip
    return run_cli("generate.round", *args, env={"SPARRING_FAULT": fault} if fault else None)


def contents(run_dir):
    with Store.for_run(run_dir, read_only=True) as s:
        assert check_store(s) == []
        return {name: s.rows(q) for name, q in TABLES.items()}, s.done_stages(1)


def test_kill_in_every_stage_then_resume_equals_uninterrupted(tmp_path, tiny_models):
    reference = tmp_path / "reference"
    assert play(reference).returncode == 0
    expected, _ = contents(reference)

    crashed = tmp_path / "crashed"
    done: set[str] = set()
    for stage in ("attack", "respond", "score", "resample", "select"):
        result = play(crashed, fault=f"{stage}:commit")
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        got, logged = contents(crashed)
        assert logged == done, f"killed in {stage}: nothing of it may be committed"
        for earlier, tables in STAGE_TABLES.items():
            for table in tables:
                # stages before the kill survive intact; the killed stage and later ones left no row
                assert got[table] == (expected[table] if earlier in done else []), (stage, table)
        done.add(stage)
    final = play(crashed)
    assert final.returncode == 0, final.stderr[-2000:]
    got, logged = contents(crashed)
    assert logged == {"attack", "respond", "score", "resample", "select"}
    assert got == expected
