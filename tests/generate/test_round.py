"""A whole round on the tiny models with the real vLLM, DuckDB, tokenizer and reward model, via the CLI.

The tests share one run directory and run in order: round 1, a no-op re-run, a forced respond, round 2.
"""

import math

import pytest

from data import sql
from data.store import Store
from tests.conftest import REPO, TINY_DIR, run_cli

pytestmark = pytest.mark.slow

P, N, MARGIN = 12, 4, 0.01


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_models):
    return tmp_path_factory.mktemp("round")


def play(run_dir, round_, *extra):
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"), "--round", str(round_),
        "--set", f"run.dir={run_dir}", "--set", f"run.tiny_models_dir={TINY_DIR}",
        "--set", f"attacker.num_prompts={P}", "--set", f"defender.n={N}", "--set", f"select.margin={MARGIN}",
        "--set", "attacker.max_tokens=24", "--set", "defender.max_tokens=24",
        *extra,
    ]  # fmt: skip
    result = run_cli("generate.round", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def snapshot(run_dir):
    with Store.for_run(run_dir, read_only=True) as s:
        return {
            t: s.rows(f"SELECT * FROM {t} ORDER BY ALL")
            for t in ("prompts", "responses", "scores", "pairs", "hard_prompts")
        }, {r["stage"]: r["finished_at"] for r in s.rows(sql.STAGE_LOG)}


def test_round_1_counts_are_exact(run_dir):
    out = play(run_dir, 1)
    assert "Sparring round 1" in out.stdout
    with Store.for_run(run_dir, read_only=True) as s:
        assert s.count("prompts", 1) == P
        assert s.count("responses", 1) == P * N
        assert s.count("scores", 1) == P * N
        assert s.count("hard_prompts", 1) == math.ceil(0.25 * P)
        # N samples per prompt, indices 0..N-1, each prompt from a stored seed (round 0)
        per_prompt = s.rows(
            "SELECT prompt_id, list(sample_index ORDER BY sample_index) AS idx FROM responses GROUP BY 1"
        )
        assert all(r["idx"] == list(range(N)) for r in per_prompt)
        assert (
            s.scalar(
                "SELECT count(*) FROM prompts p1 LEFT JOIN prompts p0 ON p1.parent_id = p0.prompt_id WHERE p1.round = 1 AND p0.round IS DISTINCT FROM 0"
            )
            == 0
        )
        # pairs: exactly the prompts whose best beats their worst by >= margin, and chosen > rejected
        expected = s.scalar(
            "SELECT count(*) FROM (SELECT r.prompt_id FROM responses r JOIN scores USING (response_id) "
            "WHERE r.round = 1 GROUP BY 1 HAVING max(value) - min(value) >= ? AND max(value) > min(value))",
            [MARGIN],
        )
        pairs = s.rows(
            "SELECT pr.*, c.value AS c, w.value AS w FROM pairs pr JOIN scores c ON c.response_id = pr.chosen_id "
            "JOIN scores w ON w.response_id = pr.rejected_id"
        )
        assert len(pairs) == expected > 0
        assert all(p["c"] - p["w"] >= MARGIN and p["chosen_id"] != p["rejected_id"] for p in pairs)
        # no duplicate prompt text (normalised) within the round
        assert s.scalar("SELECT count(DISTINCT lower(text)) FROM prompts WHERE round = 1") == P


def test_rerun_changes_nothing(run_dir):
    before = snapshot(run_dir)
    out = play(run_dir, 1)
    assert "already done: attack, respond, score, resample, select" in out.stderr
    assert snapshot(run_dir) == before


def test_force_respond_redoes_respond_and_later_only(run_dir):
    (tables, log) = snapshot(run_dir)
    play(run_dir, 1, "--force", "respond")
    (tables2, log2) = snapshot(run_dir)
    assert log2["attack"] == log["attack"]  # attack untouched
    assert all(log2[s] > log[s] for s in ("respond", "score", "select"))
    assert tables2["prompts"] == tables["prompts"]
    # same seeds -> the same responses and scores come back, with the same ids
    assert [r["response_id"] for r in tables2["responses"]] == [r["response_id"] for r in tables["responses"]]
    assert [r["text"] for r in tables2["responses"]] == [r["text"] for r in tables["responses"]]


def test_round_2_reads_round_1_hard_prompts(run_dir):
    play(run_dir, 2)
    with Store.for_run(run_dir, read_only=True) as s:
        assert s.count("prompts", 2) == P and s.count("responses", 2) == P * N
        parents = {r[0] for r in s.execute("SELECT DISTINCT parent_id FROM prompts WHERE round = 2")}
        hard_1 = {r[0] for r in s.execute("SELECT prompt_id FROM hard_prompts WHERE round = 1")}
        assert parents and parents <= hard_1
        assert s.round_info(2)["defender_model"]  # the players are recorded


def test_round_3_before_round_2_is_refused(tmp_path, tiny_models):
    result = run_cli(
        "generate.round",
        "--round",
        "2",
        "--set",
        f"run.dir={tmp_path}",
        "--set",
        f"run.tiny_models_dir={TINY_DIR}",
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1].startswith("sparring: error: round 2 needs round 1 complete")
    )
