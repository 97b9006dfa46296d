"""Config drift is an error, not a mix: a done stage recorded the values it ran with, and resuming the round with
others for its keys is one line naming the key and both values, the store unchanged (`--force STAGE` the way
out). Hand-filled stores that record their stage configs the way `generate.round` does; no engine loads."""

from __future__ import annotations

import shutil

import pytest

from core.config import SelectConfig, stage_config
from core.errors import ConfigError
from data.lineage import choose_players
from data.push import push_round
from data.select import select_round
from data.store import Store
from generate.round import round_configs, run_round
from tests.conftest import make_config
from tests.data.storefill import fill_round
from train.common import model_paths, model_row
from train.defender import train_defender

BASE = ("reward.model=rm", "defender.resample.max_samples=0")


def played(tmp_path):
    """Round 1 through score, recorded with the demo config's stage values."""
    cfg = make_config(tmp_path / "run", *BASE)
    with Store.for_run(cfg.run.dir) as s:
        players = choose_players(s, cfg, 1)
        s.stage_configs = round_configs(cfg, players)
        s.begin_round(1, players.attacker, players.defender, "rm", cfg.to_json())
        fill_round(s, 1, {"a": [1.0, -1.0], "b": [0.0, 0.5]}, scorer="rm")
    return cfg


def dump(run_dir):
    with Store.for_run(run_dir, read_only=True) as s:
        return {
            t: sorted(map(str, s.execute(f"SELECT * FROM {t}"))) for t in ("rounds", "stage_log", "pairs")
        }


@pytest.mark.parametrize(
    "override, stage, recorded, now",
    [
        ("defender.n=8", "respond", "defender.n=4", "defender.n=8"),
        ("defender.temperature=0.9", "respond", "defender.temperature=0.7", "defender.temperature=0.9"),
        ("attacker.top_p=0.5", "attack", "attacker.top_p=0.9", "attacker.top_p=0.5"),
        ("reward.model=other-rm", "score", "reward.model='rm'", "reward.model='other-rm'"),
    ],
)
def test_resuming_with_other_values_for_a_done_stage_is_refused(tmp_path, override, stage, recorded, now):
    cfg = played(tmp_path)
    before = dump(cfg.run.dir)
    with pytest.raises(ConfigError) as err:
        run_round(make_config(cfg.run.dir, *BASE, override), 1)
    message = str(err.value)
    assert f"round 1's {stage} stage ran with {recorded}" in message and now in message, message
    assert f"--force {stage}" in message and "\n" not in message
    assert dump(cfg.run.dir) == before


def test_another_defender_model_is_drift_too(tmp_path, tiny_models):
    cfg = played(tmp_path)
    other = tmp_path / "other-defender"
    shutil.copytree(tiny_models["policy"], other)
    before = dump(cfg.run.dir)
    with pytest.raises(
        ConfigError, match=r"respond stage ran with defender\.model='.*policy'.*other-defender"
    ):
        run_round(make_config(cfg.run.dir, *BASE, f"defender.model={other}"), 1)
    assert dump(cfg.run.dir) == before


def test_the_same_config_resumes_and_force_is_the_way_out(tmp_path):
    cfg = played(tmp_path)
    run_round(cfg, 1)  # same values: resumes (resample is off, select runs)
    with Store.for_run(cfg.run.dir, read_only=True) as s:
        assert s.stage_done(1, "select") and s.recorded_config(1, "select") == stage_config(cfg, "select")
    push_round(cfg, 1, "org/drift", to_dir=tmp_path / "card")  # the card says what each stage ran with
    card = (tmp_path / "card" / "README.md").read_text()
    assert "| `respond` | " in card and "`defender.n=4`" in card and "`select.margin=0.0`" in card
    changed = make_config(cfg.run.dir, *BASE, "select.margin=0.75")
    # the margin decides which prompts resample triggers on, so resample (the first stage that read it) says so
    with pytest.raises(ConfigError, match="resample stage ran with select.margin=0.0"):
        run_round(changed, 1)
    run_round(changed, 1, force="resample")
    with Store.for_run(cfg.run.dir, read_only=True) as s:
        assert s.recorded_config(1, "select")["select.margin"] == 0.75 and s.count("pairs", 1) == 1


def test_a_trained_round_with_other_training_values_is_refused(tmp_path):
    cfg = make_config(tmp_path / "run")
    with Store.for_run(cfg.run.dir) as s:
        fill_round(s, 1, {"a": [1.0, -1.0]})
        select_round(s, SelectConfig(), 1, "rm")
        s.stage_configs = {"train_defender": stage_config(cfg, "train_defender")}
        with s.stage(1, "train_defender"):
            s.insert("models", model_row(1, "defender", model_paths(cfg, 1, "defender"), "base", {}))
    assert train_defender(cfg, 1)["round"] == 1  # same values: the stored model
    with pytest.raises(ConfigError, match=r"train_defender\.learning_rate=5e-05.*learning_rate=0\.001"):
        train_defender(make_config(cfg.run.dir, "train_defender.learning_rate=1e-3"), 1)
