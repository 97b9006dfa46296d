"""`python -m game.play` (what `make demo` runs): play `run.rounds` rounds, training both players between.

Round r: `generate.round` (attack, respond, score, select) -> `train.defender` -> `train.attacker`; round r+1
plays with the models they saved: LoRA adapters on the base model, which the game's one vLLM engine serves
(on a GPU the engine is closed while the scorer and the trainers run, and started again), or merged models.
This is the one place that calls both generating and training (the README's drawing); every step is
resumable, so re-running continues where it stopped.

Experiments (the toy world) drive the same loop and hang their own steps on it through `RoundHooks`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from core.config import SparringConfig
from generate.engine import engines
from generate.round import lora_room, run_round, summary
from generate.round import plan as round_plan
from train.attacker import ATTACKER, train_attacker
from train.defender import DEFENDER, train_defender
from train.recipe import plan as train_plan

log = logging.getLogger(__name__)

Hook = Callable[[SparringConfig, int], None]


def _nothing(cfg: SparringConfig, round_: int) -> None:
    pass


@dataclass(frozen=True)
class RoundHooks:
    """Steps an experiment adds around each round; each gets the config and the round number."""

    before_round: Hook = _nothing  # e.g. store a fixed prompt set as the round's attack stage
    after_round: Hook = _nothing  # after select, before training (e.g. evaluate the round's defender)
    after_attacker: Hook = _nothing  # after the attacker's step (e.g. probe it against the same defender)
    after_game: Hook = _nothing  # once, with `rounds + 1` (e.g. evaluate the last trained defender)


def play(
    cfg: SparringConfig,
    *,
    train: bool = True,
    train_last: bool = False,
    train_attackers: bool = True,
    hooks: RoundHooks | None = None,
) -> None:
    """Play rounds 1..`run.rounds`. `train_last` also trains on the last round (experiments evaluate that
    defender); `train_attackers=False` keeps the attacker fixed (the static-prompt baseline)."""
    hooks = hooks or RoundHooks()
    rounds = cfg.run.rounds
    with engines(cfg.vllm, cfg.run.seed, lora_room(cfg)) as pool:
        for round_ in range(1, rounds + 1):
            hooks.before_round(cfg, round_)
            report = run_round(cfg, round_, pool=pool)
            log.info("round %d: %d vLLM engine start(s)", round_, report.engine_starts)
            hooks.after_round(cfg, round_)
            if train and (round_ < rounds or train_last):
                pool.release()  # the trainers need the device
                train_defender(cfg, round_)
                if train_attackers:
                    train_attacker(cfg, round_)
                    hooks.after_attacker(cfg, round_)
    hooks.after_game(cfg, rounds + 1)


def redo_attacker_step(cfg: SparringConfig, round_: int) -> None:
    """Retrain round `round_`'s attacker from the same parent on the same data (an ablation's step, on a copy of
    a finished run: the rounds after it are dropped from that copy, as a redo under them must)."""
    train_attacker(cfg, round_, force=True, drop_later=True)


def _print_summary(cfg: SparringConfig, round_: int) -> None:
    print(summary(cfg, round_), flush=True)


def main() -> None:
    from core.cli import base_parser, config_from_args, main_guard, setup_logging

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="only generate; do not train between rounds")
    args = parser.parse_args()
    setup_logging(args.verbose)

    def go() -> None:
        cfg = config_from_args(args)
        if args.dry_run:
            for round_ in range(1, cfg.run.rounds + 1):
                print(round_plan(cfg, round_))
                if not args.no_train and round_ < cfg.run.rounds:
                    print(train_plan(DEFENDER, cfg, round_))
                    print(train_plan(ATTACKER, cfg, round_))
            return
        play(cfg, train=not args.no_train, hooks=RoundHooks(after_round=_print_summary))

    main_guard(go)


if __name__ == "__main__":
    main()
