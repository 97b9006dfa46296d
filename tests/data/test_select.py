"""Selection SQL on hand-made reward tables where the right answer is known (GPO and eva strategies)."""

import pytest

from core.config import SelectConfig
from core.errors import StageError
from data import sql
from data.records import ScoreRecord, to_arrow
from data.select import select_round
from data.store import Store
from tests.data.storefill import fill_round

# mean / gap per prompt:      mean    gap
REWARDS = {
    "a": [0.0, 0.1, 0.2, 0.3],  # 0.15   0.3
    "b": [-1.0, -0.9, -1.1, -1.0],  # -1.0   0.2   <- lowest mean (GPO's hardest)
    "c": [-0.5, 2.5, 0.0, 0.0],  # 0.5    3.0   <- largest gap (eva's most informative)
    "d": [0.7, 0.7, 0.7, 0.7],  # 0.7    0.0   <- all tied: no pair
    "e": [0.9],  # 0.9    0.0   <- a single response: no pair
    "f": [-0.6, -0.2, 0.4, -0.6],  # -0.25  1.0
    "g": [0.4, 0.45, 0.4, 0.4],  # 0.4125 0.05  <- gap below a 0.1 margin
    "h": [0.2, 1.2, 0.2, 0.2],  # 0.45   1.0
}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        fill_round(s, 1, REWARDS)
        yield s


def hard(store):
    return [r["prompt_id"] for r in store.rows(sql.HARD_PROMPTS, [1])]


def test_gpo_picks_lowest_mean_reward(store):
    select_round(store, SelectConfig(strategy="gpo", hard_fraction=0.25), 1, "rm")
    assert hard(store) == ["b", "f"]  # ceil(0.25 * 8) = 2, lowest mean first


def test_eva_picks_largest_reward_gap(store):
    select_round(store, SelectConfig(strategy="eva", hard_fraction=0.5), 1, "rm")
    # gaps: c 3.0, f 1.0, h 1.0 (tie broken by generation order: f before h), a 0.3
    assert hard(store) == ["c", "f", "h", "a"]
    gaps = [r["reward_gap"] for r in store.rows(sql.HARD_PROMPTS, [1])]
    assert gaps == pytest.approx([3.0, 1.0, 1.0, 0.3])


def test_pairs_are_best_vs_worst_with_margin(store):
    select_round(store, SelectConfig(margin=0.1), 1, "rm")
    pairs = {r["prompt_id"]: r for r in store.rows("SELECT * FROM pairs WHERE round = 1")}
    assert set(pairs) == {"a", "b", "c", "f", "h"}  # d tied, e single, g gap 0.05 < 0.1
    assert (pairs["c"]["chosen_id"], pairs["c"]["rejected_id"]) == ("c-1", "c-0")
    assert pairs["c"]["margin"] == pytest.approx(3.0)
    # ties among the worst go to the lowest sample index
    assert (pairs["f"]["chosen_id"], pairs["f"]["rejected_id"]) == ("f-2", "f-0")
    assert all(p["chosen_reward"] - p["rejected_reward"] >= 0.1 for p in pairs.values())


def test_zero_margin_still_drops_ties(store):
    select_round(store, SelectConfig(margin=0.0), 1, "rm")
    got = {r[0] for r in store.execute("SELECT prompt_id FROM pairs")}
    assert got == {"a", "b", "c", "f", "g", "h"}


def test_only_the_named_scorer_counts(tmp_path):
    """`other` spreads the answers, `rm` ties them: selecting by `rm` finds no pair (and its hard prompt)."""
    with Store(tmp_path / "s.duckdb") as s:
        fill_round(s, 1, {"x": [0.0, 1.0]}, scorer="other")
        tied = [ScoreRecord(f"x-{j}", "rm", 1, 0.5) for j in range(2)]
        s.insert("scores", to_arrow(tied, ScoreRecord))
        select_round(s, SelectConfig(), 1, "rm")
        assert s.count("pairs", 1) == 0 and s.count("hard_prompts", 1) == 1


def test_select_without_scores_is_a_clear_error(tmp_path):
    with Store(tmp_path / "s.duckdb") as s, pytest.raises(StageError, match="round 3 has no scores"):
        select_round(s, SelectConfig(), 3, "rm")


def test_a_scorer_with_no_scores_in_the_round_is_a_one_line_error(tmp_path):
    """Scores stored under one name and looked up under another used to give zero pairs and a warning."""
    with Store.for_run(tmp_path / "run") as s:
        fill_round(s, 1, {"a": [1.0, 0.0]}, scorer="my_scorers:LengthScorer")
        before = s.rows("SELECT * FROM stage_log ORDER BY ALL")
        with pytest.raises(StageError) as err:
            select_round(s, SelectConfig(), 1, "LengthScorer")
        message = str(err.value)
        assert "no scores under scorer 'LengthScorer' (it has: my_scorers:LengthScorer)" in message
        assert "\n" not in message and "--force score" in message
        assert s.rows("SELECT * FROM stage_log ORDER BY ALL") == before and s.count("pairs", 1) == 0
