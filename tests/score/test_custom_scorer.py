"""The README's custom-scorer example, run as a user would: from `reward.kind`, through scoring and selection."""

from __future__ import annotations

import re
import sys

from core.config import SelectConfig
from data.select import select_round
from data.store import Store
from score.scorer import build_scorer, scorer_name
from score.stage import score_round
from tests.conftest import REPO, make_config
from tests.data.storefill import fill_round


def test_readme_scorer_example_yields_pairs(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class LengthScorer" in b)
    (tmp_path / "my_scorers.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = make_config(tmp_path / "run", "reward.kind=my_scorers:LengthScorer")
    with Store.for_run(cfg.run.dir) as store:
        texts = {"a": ["ok", "a much longer answer than that"], "b": ["same", "same"]}
        fill_round(store, 1, {"a": [0, 0], "b": [0, 0]}, scorer="unused", texts=texts)
        store.reset_from(1, "score")
        scorer = build_scorer(cfg)
        score_round(store, 1, scorer, scorer_name(cfg))
        select_round(store, SelectConfig(), 1, scorer_name(cfg))
        pairs = store.rows("SELECT prompt_id, chosen_id, rejected_id FROM pairs")
    assert pairs == [{"prompt_id": "a", "chosen_id": "a-0", "rejected_id": "a-1"}]  # the short answer wins
    sys.modules.pop("my_scorers", None)
