"""`python -m generate.demo` (what `make demo` runs): play `run.rounds` rounds, training both players between.

Round r: generate.round (attack, respond, score, select) -> train.defender -> train.attacker; round r+1's vLLM
then loads the merged models they saved. Every step is resumable, so re-running continues where it stopped.
"""

from __future__ import annotations

import logging

from data.config import SparringConfig
from generate.round import run_round, summary

log = logging.getLogger(__name__)


def play(cfg: SparringConfig, train: bool = True) -> None:
    from train.attacker import train_attacker
    from train.defender import train_defender

    for round_ in range(1, cfg.run.rounds + 1):
        run_round(cfg, round_)
        print(summary(cfg, round_), flush=True)
        if train and round_ < cfg.run.rounds:
            train_defender(cfg, round_)
            train_attacker(cfg, round_)


def main() -> None:
    from data.cli import base_parser, config_from_args, main_guard, setup_logging

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="only generate; do not train between rounds")
    args = parser.parse_args()
    setup_logging(args.verbose)
    main_guard(lambda: play(config_from_args(args), train=not args.no_train))


if __name__ == "__main__":
    main()
