"""The resample stage: which prompts get more answers, how many, and that the answers are stored, scored and
seen by selection (a hand-made store; the real tiny defender in vLLM for the slow test)."""

from __future__ import annotations

import pytest

from data.check import check_store
from data.store import Store
from generate.resample import triggered
from tests.conftest import TINY_DIR, run_cli
from tests.data.storefill import fill_round

SCORER = "tests.generate.scorers:TextHashScorer"


def test_trigger_is_a_tie_or_a_failed_best():
    assert triggered([0.5, 0.5, 0.5], margin=0.0, failure_below=None)  # tie: no pair possible
    assert not triggered([0.0, 1.0], margin=0.0, failure_below=None)  # a pair exists
    assert triggered([0.0, 0.05], margin=0.1, failure_below=None)  # below the pair margin: no pair either
    assert not triggered([-1.0, -0.5], margin=0.0, failure_below=None)  # a pair, and failures not asked about
    assert triggered([-1.0, -0.5], margin=0.0, failure_below=0.0)  # the best answer still fails
    assert not triggered([-1.0, 0.5], margin=0.0, failure_below=0.0)
    assert not triggered([], margin=0.0, failure_below=0.0)


@pytest.mark.slow
def test_resample_triggers_only_on_tied_or_failed_prompts_and_stops_at_the_budget(tmp_path, tiny_models):
    """tied: 4 equal rewards; failed: spread but all below 0; fine: a pair with a success. Budget 10 answers
    per prompt in 2 passes of 3: tied and failed get extra answers (pass 1, then pass 2 only if still
    triggered), fine gets none, and no prompt exceeds 10."""
    run_dir = tmp_path / "run"
    rewards = {"tied": [1.0] * 4, "failed": [-1.0, -0.5, -1.0, -0.5], "fine": [-1.0, 1.0, 0.0, 1.0]}
    with Store.for_run(run_dir) as s:
        s.begin_round(1, str(tiny_models["policy"]), str(tiny_models["policy"]), SCORER, "{}")
        fill_round(s, 1, rewards, scorer=SCORER)
    sets = [
        "--set", f"run.dir={run_dir}", "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", f"reward.kind={SCORER}",
        "--set", "defender.resample.max_samples=10", "--set", "defender.resample.passes=2",
        "--set", "defender.resample.failures=true", "--set", "reward.failure_below=0.0",
        "--set", "defender.resample.temperature=1.2",
        "--set", "defender.max_tokens=16",
    ]  # fmt: skip
    result = run_cli("generate.round", "--round", "1", *sets)
    assert result.returncode == 0, result.stderr[-3000:]
    with Store.for_run(run_dir, read_only=True) as s:
        counts = dict(s.execute("SELECT prompt_id, count(*) FROM responses GROUP BY 1"))
        extra = dict(s.execute("SELECT prompt_id, count(*) FROM responses WHERE sample_pass > 0 GROUP BY 1"))
        details = s.rows("SELECT details FROM stage_log WHERE stage = 'resample'")[0]["details"]
        scored = s.scalar(
            "SELECT count(*) FROM responses r JOIN scores c USING (response_id) WHERE c.scorer = ?", [SCORER]
        )
        first = s.rows("SELECT response_id, text FROM responses WHERE sample_pass > 0 ORDER BY response_id")
        indices = [
            r[0] for r in s.execute("SELECT sample_index FROM responses WHERE prompt_id = 'tied' ORDER BY 1")
        ]
        assert check_store(s) == []
    assert set(extra) == {"tied", "failed"} and "fine" not in extra
    assert all(4 + 3 <= counts[p] <= 10 for p in ("tied", "failed")) and counts["fine"] == 4
    assert scored == sum(counts.values())  # every extra answer is scored under the round's scorer
    assert indices == list(range(counts["tied"]))  # sample indices continue after the first N
    assert '"triggered": 2' in details
    # seeded: redoing the stage gives the same answers
    again = run_cli("generate.round", "--round", "1", "--force", "resample", *sets)
    assert again.returncode == 0, again.stderr[-3000:]
    with Store.for_run(run_dir) as s:
        assert (
            s.rows("SELECT response_id, text FROM responses WHERE sample_pass > 0 ORDER BY response_id")
            == first
        )
        resampled_pairs = s.scalar(
            """SELECT count(*) FROM pairs p JOIN responses c ON c.response_id = p.chosen_id
               JOIN responses w ON w.response_id = p.rejected_id
               WHERE p.prompt_id IN ('tied', 'failed') AND c.sample_pass + w.sample_pass > 0"""
        )
    assert resampled_pairs >= 1  # selection sees the extra answers: a prompt that had no pair now has one
