"""`python -m data.check --run DIR`: verify a run store's invariants (exit 1 and one line per broken rule).

Run after every crash/resume and bad-input scenario in the tests: whatever happened, the store must still
say something true (every response has a prompt, every score a response, every pair two distinct scored
responses of the same prompt, no stage output without its log row, trained models exist on disk).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data import sql
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
    return problems


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
