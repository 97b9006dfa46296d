"""`reward.kind: combined` on a hand-made store: each part stored under its name, the weighted sum under the
combined name, selection by the combination; its config (names, weights, failure rule) validated on load."""

from __future__ import annotations

import pytest

from core.config import SelectConfig
from core.errors import ConfigError
from data.select import select_round
from data.store import Store
from score.scorer import build_scorer, scorer_name
from score.stage import score_round
from tests.conftest import make_config
from tests.data.storefill import fill_round

PARTS = (
    "reward.parts=[{name: length, kind: 'tests.score.parts:LengthPart', model: unused, weight: 1},"
    " {name: polite, kind: 'tests.score.parts:PolitePart', model: unused, weight: 2}]"
)


def test_parts_are_stored_and_selection_uses_the_combination(tmp_path):
    cfg = make_config(tmp_path / "run", "reward.kind=combined", PARTS, "reward.failure_below=0.5")
    name = scorer_name(cfg)
    assert name == "combined(1·length, 2·polite)"
    texts = {
        "a": ["please", "a long answer without the magic word"],  # length prefers 1, the combination 0
        "b": ["short", "a longer answer"],  # parts agree: 1
    }
    with Store.for_run(cfg.run.dir) as store:
        fill_round(store, 1, {"a": [0, 0], "b": [0, 0]}, scorer="unused", texts=texts)
        store.reset_from(1, "score")
        score_round(store, 1, build_scorer(cfg), name)
        scores = {(r["response_id"], r["scorer"]): r["value"] for r in store.rows("SELECT * FROM scores")}
        select_round(store, SelectConfig(), 1, name)
        pairs = store.rows("SELECT prompt_id, chosen_id, rejected_id FROM pairs ORDER BY prompt_id")
    for rid in ("a-0", "a-1", "b-0", "b-1"):
        length, polite = scores[(rid, "length")], scores[(rid, "polite")]
        assert scores[(rid, name)] == pytest.approx(1 * length + 2 * polite)
    assert scores[("a-1", "length")] > scores[("a-0", "length")]
    assert pairs == [
        {
            "prompt_id": "a",
            "chosen_id": "a-0",
            "rejected_id": "a-1",
        },  # the combination's choice, not length's
        {"prompt_id": "b", "chosen_id": "b-1", "rejected_id": "b-0"},
    ]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["reward.parts=[{name: a, weight: -1}]", "reward.failure_below=0"], "reward.parts[0].weight=-1.0 is out of range"),
        (["reward.parts=[{name: a, weight: .nan}]", "reward.failure_below=0"], "reward.parts[0].weight=nan is out of range"),
        (["reward.parts=[{name: a, weight: 0}, {name: b, weight: 0}]", "reward.failure_below=0"], "reward.parts weights are all 0"),
        (["reward.parts=[{name: a}, {name: a}]", "reward.failure_below=0"], "reward.parts[0].name='a' is used twice"),
        (["reward.parts=[{name: ''}]", "reward.failure_below=0"], "reward.parts[0].name='' is empty"),
        (["reward.parts=[{name: a, kind: combined}]", "reward.failure_below=0"], "reward.parts[0].kind='combined' is not allowed"),
        (["reward.parts=[{name: a}]"], "reward.failure_below is not set for reward.kind=combined"),
        ([], "reward.kind=combined has no reward.parts"),
    ],
)  # fmt: skip
def test_combined_config_is_validated(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, "reward.kind=combined", *overrides)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_parts_without_combined_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^reward.parts is set but reward.kind='reward_model'"):
        make_config(tmp_path, "reward.parts=[{name: a}]")
