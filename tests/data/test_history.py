"""History cannot be rewritten by mistake: redoing a stage of round N while later rounds exist is refused with one
line naming them and the store unchanged; with --drop-later the later rounds and their models go, in one
transaction, and the store stays sound."""

from __future__ import annotations

import pytest

from core.config import SelectConfig
from core.errors import StageError
from data.check import check_store
from data.select import select_round
from data.store import Store
from generate.round import run_round
from tests.conftest import make_config, run_cli
from tests.data.storefill import fill_round
from train.common import model_paths, model_row
from train.defender import train_defender


def two_rounds(tmp_path):
    """Rounds 1 and 2 filled by hand, each selected; round 1's trained models recorded with files on disk."""
    cfg = make_config(tmp_path / "run", "defender.resample.max_samples=0", "reward.model=rm")
    with Store.for_run(cfg.run.dir) as s:
        for r in (1, 2):
            s.begin_round(r, "attacker", "defender", "rm", cfg.to_json())
            fill_round(s, r, {f"p{r}": [1.0, -1.0], f"q{r}": [0.5, 0.0]})
            with s.stage(r, "resample"):
                pass
            select_round(s, SelectConfig(), r, "rm")
            for stage, role in (("train_defender", "defender"), ("train_attacker", "attacker")):
                paths = model_paths(cfg, r, role)
                paths.player.mkdir(parents=True)
                paths.adapter.mkdir(parents=True)
                with s.stage(r, stage):
                    s.insert("models", model_row(r, role, paths, "base", {}))
    return cfg


def dump(run_dir):
    with Store.for_run(run_dir, read_only=True) as s:
        tables = ("rounds", "prompts", "responses", "scores", "hard_prompts", "pairs", "models", "stage_log")
        return {t: sorted(map(str, s.execute(f"SELECT * FROM {t}"))) for t in tables}


def test_force_with_later_rounds_is_refused_and_changes_nothing(tmp_path):
    cfg = two_rounds(tmp_path)
    before = dump(cfg.run.dir)
    with pytest.raises(StageError) as err:
        run_round(cfg, 1, force="select")
    message = str(err.value)
    assert "\n" not in message and "round(s) 2" in message and "--drop-later" in message
    with pytest.raises(StageError, match=r"--force train_defender on round 1 would rewrite .* round\(s\) 2"):
        train_defender(cfg, 1, force=True)
    assert dump(cfg.run.dir) == before
    assert model_paths(cfg, 1, "defender").player.is_dir()  # round 2 played with it: still there
    cli = run_cli(
        "generate.round", "--round", "1", "--force", "score", "--set", f"run.dir={cfg.run.dir}",
        "--set", "defender.resample.max_samples=0", "--set", "reward.model=rm",
    )  # fmt: skip
    assert cli.returncode == 2 and cli.stderr.strip().splitlines()[-1].startswith(
        "sparring: error: --force score"
    )
    assert dump(cfg.run.dir) == before


def test_drop_later_removes_later_rounds_and_their_models_in_one_go(tmp_path):
    cfg = two_rounds(tmp_path)
    run_round(cfg, 1, force="select", drop_later=True)
    with Store.for_run(cfg.run.dir, read_only=True) as s:
        assert s.later_rounds(1) == []
        for table in (
            "prompts",
            "responses",
            "scores",
            "pairs",
            "hard_prompts",
            "models",
            "stage_log",
            "rounds",
        ):
            assert s.scalar(f"SELECT count(*) FROM {table} WHERE round > 1") == 0, table
        assert s.stage_done(1, "select") and s.count("pairs", 1) == 2  # round 1 redone from its scores
        assert not s.stage_done(1, "train_defender")  # undone with the select it was trained on
        assert check_store(s) == []
    assert (
        not model_paths(cfg, 2, "defender").root.exists()
        and not model_paths(cfg, 2, "attacker").root.exists()
    )


def test_drop_later_is_one_transaction(tmp_path, monkeypatch):
    """A failure inside the undo leaves every round as it was: the drop is rolled back with it."""
    import data.sql as sql

    cfg = two_rounds(tmp_path)
    before = dump(cfg.run.dir)
    monkeypatch.setitem(sql.DELETE_ROUND_ROWS, "models_defender", "DELETE FROM no_such_table WHERE round = ?")
    with Store.for_run(cfg.run.dir) as s, pytest.raises(Exception, match="no_such_table"):
        s.reset_from(1, "select", drop_later=True)
    assert dump(cfg.run.dir) == before
