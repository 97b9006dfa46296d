"""A round with no preference pair: with `train_defender.on_zero_pairs: carry_over` the defender is recorded as
carried over (the next round plays the same model), the stage is logged, and the game goes on to the attacker."""

from __future__ import annotations

import pytest

from core.config import SelectConfig
from core.errors import StageError
from data.check import check_store
from data.lineage import players_for_round
from data.select import select_round
from data.store import Store
from game.play import RoundHooks, play
from tests.conftest import make_config
from tests.data.storefill import fill_round


@pytest.mark.slow
def test_a_zero_pair_round_is_recorded_and_the_game_goes_on(tmp_path, tiny_models, caplog):
    cfg = make_config(
        tmp_path / "run",
        "run.rounds=1",
        "reward.kind=tests.generate.scorers:TextHashScorer",
        "train_defender.on_zero_pairs=carry_over",
        "train_attacker.max_steps=1",
    )
    scorer = "tests.generate.scorers:TextHashScorer"
    with Store.for_run(cfg.run.dir) as s:
        s.begin_round(1, str(tiny_models["policy"]), str(tiny_models["policy"]), scorer, cfg.to_json())
        fill_round(s, 1, {"a": [0.5, 0.5], "b": [-1.0, -1.0]}, scorer=scorer)  # every answer ties: 0 pairs
        with s.stage(1, "resample"):
            pass
        select_round(s, SelectConfig(), 1, scorer)
    seen: list[int] = []
    play(cfg, train_last=True, hooks=RoundHooks(after_attacker=lambda c, r: seen.append(r)))
    assert "round 1 has 0 preference pairs; the defender carries over unchanged" in caplog.text
    with Store.for_run(cfg.run.dir, read_only=True) as s:
        row = s.rows("SELECT path, adapter_path, parent, details FROM models WHERE role = 'defender'")[0]
        assert row["path"] == row["parent"] == str(tiny_models["policy"]) and row["adapter_path"] is None
        assert '"carried_over": true' in row["details"]
        assert s.stage_done(1, "train_defender") and s.stage_done(1, "train_attacker")  # the game went on
        assert players_for_round(s, cfg, 2).defender == str(tiny_models["policy"])
        assert check_store(s) == []
    assert seen == [1]


def test_zero_pairs_still_stop_by_default(tmp_path, tiny_models):
    cfg = make_config(tmp_path / "run")
    with Store.for_run(cfg.run.dir) as s:
        fill_round(s, 1, {"a": [0.5, 0.5]})
        select_round(s, SelectConfig(), 1, "rm")
    from train.defender import train_defender

    with pytest.raises(StageError, match="0 preference pairs"):
        train_defender(cfg, 1)
