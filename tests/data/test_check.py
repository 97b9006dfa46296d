"""data.check finds each kind of broken store, and passes a sound one."""

import pytest

from core.config import SelectConfig
from data.check import check_store
from data.select import select_round
from data.store import Store
from tests.conftest import run_cli
from tests.data.storefill import fill_round


@pytest.fixture
def store(tmp_path):
    with Store.for_run(tmp_path) as s:
        fill_round(s, 1, {"a": [0.0, 1.0], "b": [0.5, 0.2]})
        select_round(s, SelectConfig(), 1, "rm")
        yield s


def test_sound_store_passes(store):
    assert check_store(store) == []


@pytest.mark.parametrize(
    ("damage", "rule"),
    [
        ("DELETE FROM prompts WHERE prompt_id = 'a'", "every response has a prompt"),
        ("DELETE FROM responses WHERE response_id = 'a-0'", "every score has a response"),
        ("UPDATE pairs SET rejected_id = chosen_id", "every pair is two distinct scored responses"),
        ("UPDATE pairs SET chosen_reward = -5", "chosen above rejected"),
        ("DELETE FROM stage_log WHERE stage = 'respond'", "no stage output without its stage-log row"),
        ("UPDATE prompts SET parent_id = 'ghost'", "every parent is a prompt of an earlier round"),
    ],
)
def test_each_broken_rule_is_reported(store, damage, rule):
    store.execute(damage)
    problems = check_store(store)
    assert any(rule in p for p in problems), problems


def test_cli_exit_codes(tmp_path):
    with Store.for_run(tmp_path) as s:
        fill_round(s, 1, {"a": [0.0, 1.0]})
    ok = run_cli("data.check", "--run", str(tmp_path))
    assert ok.returncode == 0 and "OK" in ok.stdout
    with Store.for_run(tmp_path) as s:
        s.execute("DELETE FROM prompts")
    bad = run_cli("data.check", "--run", str(tmp_path))
    assert bad.returncode == 1 and "every response has a prompt" in bad.stdout
