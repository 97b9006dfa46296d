"""Derived state is tied to what it was derived from (issue 15, items 1–2 and the `data.check` invariants):
a redo undoes exactly the stages that read the redone one; checkpoints from other data are never resumed; a
model recorded as trained on data no longer in the store, or a round stage that ran with another config than
its `rounds` row, is reported by `data.check`."""

from __future__ import annotations

import json

from core.config import SelectConfig
from data.check import check_store
from data.lineage import inputs_digest, training_inputs
from data.select import select_round
from data.store import Store, dependents
from tests.conftest import make_config
from tests.data.storefill import fill_round
from train.common import model_paths
from train.recipe import INPUTS_FILE, claim_checkpoints


def trained_round(store: Store, round_: int = 1) -> None:
    """A selected round whose defender and attacker were 'trained' on it, as the trainers record them."""
    fill_round(store, round_, {"a": [0.0, 1.0], "b": [0.5, 0.2]}, scorer="rm")
    select_round(store, SelectConfig(), round_, "rm")
    for role, stage in (("defender", "train_defender"), ("attacker", "train_attacker")):
        digest = inputs_digest(training_inputs(store, round_, role))
        with store.stage(round_, stage) as result:
            store.execute(
                "INSERT INTO models (round, role, path, adapter_path, parent, details) VALUES (?, ?, ?, NULL, ?, ?)",
                [round_, role, f"model-{role}", "base", json.dumps({"inputs": digest})],
            )
            result.rows = 1


def test_each_redo_undoes_exactly_what_reads_it():
    assert dependents("train_defender") == ["train_defender"]  # no longer undoes the attacker's training
    assert dependents("train_attacker") == ["train_attacker"]
    assert dependents("select") == ["select", "train_defender"]  # the attacker does not read the pairs
    assert dependents("score") == ["score", "resample", "select", "train_defender", "train_attacker"]


def test_forcing_the_defender_keeps_the_attacker(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.begin_round(1, "att", "def", "rm", "{}")
        trained_round(store)
        assert store.reset_from(1, "train_defender") == ["train_defender"]
        assert store.stage_done(1, "train_attacker") and not store.stage_done(1, "train_defender")
        roles = [r[0] for r in store.execute("SELECT role FROM models")]
        assert roles == ["attacker"]


def test_a_model_trained_on_pairs_no_longer_in_the_store_is_reported(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        store.begin_round(1, "att", "def", "rm", "{}")
        trained_round(store)
        assert [p for p in check_store(store) if "trained on data" in p] == []
        store.execute(
            "DELETE FROM pairs WHERE prompt_id = 'a'"
        )  # what a redone select with a new margin does
        problems = [p for p in check_store(store) if "trained on data" in p]
    assert len(problems) == 1 and problems[0].startswith("the defender model of round 1 was trained on data")


def test_a_round_stage_that_ran_with_another_config_than_its_rounds_row_is_reported(tmp_path):
    cfg = make_config(tmp_path / "run")
    with Store.for_run(cfg.run.dir) as store:
        store.begin_round(1, "att", "def", "rm", cfg.to_json())
        store.stage_configs = {"respond": {"defender.n": cfg.defender.n + 4}}
        fill_round(store, 1, {"a": [0.0, 1.0]}, scorer="rm")
        problems = check_store(store)
    assert (
        f"round 1: stage respond ran with defender.n={cfg.defender.n + 4} but the rounds row records "
        in "".join(problems)
    )


def test_checkpoints_from_other_data_are_removed_not_resumed(tmp_path):
    paths = model_paths(make_config(tmp_path / "run"), 1, "defender")
    stale = paths.checkpoints / "checkpoint-2"
    stale.mkdir(parents=True)
    (paths.checkpoints / INPUTS_FILE).write_text(json.dumps({"inputs": "old-pairs"}))
    claim_checkpoints(paths, "same-pairs", 1, "defender")
    assert not stale.exists()  # trained on other pairs: gone
    assert json.loads((paths.checkpoints / INPUTS_FILE).read_text()) == {"inputs": "same-pairs"}
    kept = paths.checkpoints / "checkpoint-4"
    kept.mkdir()
    claim_checkpoints(paths, "same-pairs", 1, "defender")
    assert kept.exists()  # the same data: resumed


def test_stale_checkpoints_are_reported(tmp_path):
    run_dir = tmp_path / "run"
    with Store.for_run(run_dir) as store:
        store.begin_round(1, "att", "def", "rm", "{}")
        trained_round(store)
        paths = model_paths(make_config(run_dir), 1, "defender")
        claim_checkpoints(paths, inputs_digest(training_inputs(store, 1, "defender")), 1, "defender")
        assert [p for p in check_store(store) if "checkpoints" in p] == []
        store.execute("DELETE FROM pairs WHERE prompt_id = 'a'")
        problems = [p for p in check_store(store) if "checkpoints" in p]
    assert len(problems) == 1 and problems[0].startswith("the defender checkpoints of round 1 in ")


def test_forcing_round_1_attack_rereads_the_seed_file(tmp_path):
    """`--force attack` with a new `attacker.seed_file` used to check the new file, then play the stored seeds."""
    from data.records import PromptRecord, to_arrow
    from generate.attack import _parents

    new_seeds = tmp_path / "new.jsonl"
    new_seeds.write_text('{"category": "new", "text": "A brand new seed prompt"}\n', encoding="utf-8")
    cfg = make_config(tmp_path / "run", f"attacker.seed_file={new_seeds}")
    with Store.for_run(cfg.run.dir) as store:
        with store.stage(1, "attack"):
            store.insert(
                "prompts",
                to_arrow([PromptRecord("s0", 0, 0, "an old seed", "old", None, "seed")], PromptRecord),
            )
        fill_round(store, 1, {"a": [0.0, 1.0]})
        assert [p.text for p in _parents(store, cfg, 1)[0]] == ["an old seed"]  # resumed: the stored seeds
        store.reset_from(1, "attack")
        parents, to_store = _parents(store, cfg, 1)
        assert [p.text for p in parents] == ["A brand new seed prompt"] and to_store is not None
        store.insert(
            "prompts",
            to_arrow(
                [PromptRecord("s1", 0, 0, "A brand new seed prompt", "new", None, "seed")], PromptRecord
            ),
        )
        fill_round(store, 2, {"b": [0.0, 1.0]})
        store.reset_from(2, "attack")  # a later round's redo leaves the seeds alone
        assert store.count("prompts", 0) == 1 and store.count("prompts", 2) == 0


def test_a_newer_store_is_refused_before_anything_is_created_in_it(tmp_path):
    import duckdb
    import pytest

    from core.errors import StoreError
    from data import sql

    path = tmp_path / "newer.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(sql.SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(StoreError, match="newer than this Sparring"):
        Store(path)
    con = duckdb.connect(str(path), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()] == [
        "meta"
    ]
    con.close()
