"""`python -m data.check --run DIR`: verify a run store's invariants (exit 1 and one line per broken rule).

Run after every crash/resume and bad-input scenario in the tests: whatever happened, the store must still
say something true (every response has a prompt, every score a response, every pair two distinct scored
responses of the same prompt, no stage output without its log row, trained models exist on disk).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.errors import StageError
from data import sql
from data.lineage import inputs_digest, stale_models, training_inputs
from data.store import Store


def check_store(store: Store) -> list[str]:
    """The broken invariants, as lines 'rule: N rows'; empty when the store is sound."""
    problems = []
    for rule, query in sql.INVARIANTS.items():
        bad = int(store.scalar(query))
        if bad:
            problems.append(f"{rule}: {bad} rows break it")
    for round_, role, path in store.execute(sql.MODEL_PATHS):
        if not Path(path).exists():
            problems.append(f"the {role} model of round {round_} is missing on disk: {path}")
    return problems + stale_models(store) + stale_checkpoints(store) + config_disagreements(store)


def stale_checkpoints(store: Store) -> list[str]:
    """Checkpoints (`models/round-N/<role>/checkpoints/inputs.json`, `train.common.model_paths`) whose input
    digest the store no longer gives: a trainer would remove them rather than resume, but they are not true."""
    problems = []
    for marker in sorted(store.path.parent.glob("models/round-*/*/checkpoints/inputs.json")):
        role, round_ = marker.parent.parent.name, int(marker.parent.parent.parent.name.split("-")[1])
        recorded = json.loads(marker.read_text()).get("inputs")
        try:
            now = inputs_digest(training_inputs(store, round_, role))
        except StageError:
            now = "unreadable"
        if recorded != now:
            problems.append(
                f"the {role} checkpoints of round {round_} in {marker.parent} were trained on data that is no longer "
                f"in the store (inputs {recorded}, now {now}); the trainer starts over instead of resuming them"
            )
    return problems


def config_disagreements(store: Store) -> list[str]:
    """Stages whose recorded config (what they ran with) disagrees with their round's `rounds` row."""
    problems = []
    rounds = {r["round"]: json.loads(r["config_json"] or "{}") for r in store.rows(sql.REPORT_ROUNDS)}
    for row in store.rows(sql.STAGE_CONFIGS):
        recorded = json.loads(row["details"] or "{}").get("config") or {}
        config = rounds.get(row["round"], {})
        for key, value in recorded.items():
            found: Any = config
            for part in key.split("."):
                found = found.get(part, _MISSING) if isinstance(found, dict) else _MISSING
            if found is not _MISSING and found != value and not key.endswith(".model"):
                problems.append(
                    f"round {row['round']}: stage {row['stage']} ran with {key}={value!r} but the rounds row "
                    f"records {found!r}"
                )
    return problems


_MISSING = object()


def main() -> None:
    from core.cli import main_guard

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory (holds sparring.duckdb)")
    args = p.parse_args()

    def go() -> int:
        with Store.for_run(args.run, read_only=True) as store:
            problems = check_store(store)
        for line in problems:
            print(line)
        print(f"{args.run}: {'OK' if not problems else f'{len(problems)} invariants broken'}")
        return 1 if problems else 0

    sys.exit(main_guard(go))


if __name__ == "__main__":
    main()
