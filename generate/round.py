"""`python -m generate.round --round N`: play one round of the game, resuming where it stopped.

attack (attacker writes prompts) -> respond (defender answers N times) -> score (the scorer) -> resample
(more answers where the N give no pair) -> select (hard prompts + pairs, SQL). Each stage is committed with
its stage-log row in one transaction; stages already logged are skipped, so re-running the command resumes.
`--force STAGE` redoes STAGE and the stages after it (undoing their rows first); a resume whose config
differs from what a done stage ran with is refused (`data.lineage.check_drift`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.adapters import VLLM_RANKS, adapter_base, is_adapter
from core.config import SparringConfig, stage_config
from core.errors import StageError
from core.preflight import check_chat_model
from core.tiny_models import is_tiny
from data import sql
from data.lineage import Players, check_drift, check_history, choose_players, remove_model_dirs
from data.prompts import load_seed_file
from data.select import select_round
from data.store import Store
from generate.attack import attack
from generate.engine import Engines, engines
from generate.resample import resample
from generate.respond import respond
from score.scorer import build_scorer, check_scorer, describe_scorer, scorer_name

log = logging.getLogger(__name__)
ROUND_STAGES = ("attack", "respond", "score", "resample", "select")


@dataclass
class RoundReport:
    round: int
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    engine_starts: int = 0


def run_round(
    cfg: SparringConfig,
    round_: int,
    force: str | None = None,
    drop_later: bool = False,
    pool: Engines | None = None,
) -> RoundReport:
    """Run the stages of `round_` that are not yet in the store. Call from under `__main__` (vLLM spawns).

    `force` redoes that stage and the ones after it; when later rounds exist it is refused unless
    `drop_later`, which removes them (and their models) in the same transaction as the undo. `pool` is the
    game's engines (`game.play` keeps one across rounds); without it the round starts and closes its own."""
    if round_ < 1:
        raise StageError(f"--round {round_} is not a round; expected an integer >= 1")
    if force is not None and force not in ROUND_STAGES:
        raise StageError(f"--force {force} is not a round stage; expected one of: {', '.join(ROUND_STAGES)}")
    report = RoundReport(round_)
    with Store.for_run(cfg.run.dir, keep_if_unused=False) as store:
        if round_ > 1 and not store.stage_done(round_ - 1, "select"):
            raise StageError(
                f"round {round_} needs round {round_ - 1} complete, but its select stage is not in the store; "
                f"run `python -m generate.round --round {round_ - 1}` first"
            )
        # Preflight checks what will run *before* --force deletes anything, so a bad model or seed file
        # fails with the store as it was.
        done = store.done_stages(round_)
        stale_models: list[Path] = []
        if force is not None:
            stale_models = check_history(store, round_, f"--force {force}", drop_later)
            done -= set(ROUND_STAGES[ROUND_STAGES.index(force) :])
        # the players and config values this run would use; a done stage that ran with others stops it here
        players = choose_players(store, cfg, round_)
        store.stage_configs = round_configs(cfg, players)
        check_drift(store, round_, [s for s in ROUND_STAGES if s in done], store.stage_configs)
        _preflight(cfg, round_, players, done)
        if force is not None:
            undone = store.reset_from(round_, force, drop_later=drop_later)
            remove_model_dirs(stale_models)
            dropped = f"; dropped the later rounds and {len(stale_models)} model(s)" if drop_later else ""
            log.info("round %d: redoing %s%s", round_, ", ".join(undone), dropped)
        store.begin_round(round_, players.attacker, players.defender, scorer_name(cfg), cfg.to_json())
        todo = [s for s in ROUND_STAGES if not store.stage_done(round_, s)]
        report.skipped = [s for s in ROUND_STAGES if s not in todo]
        if report.skipped:
            log.info("round %d: already done: %s", round_, ", ".join(report.skipped))
        own = (
            engines(cfg.vllm, cfg.run.seed, lora_room(cfg)) if pool is None else contextlib.nullcontext(pool)
        )
        with own as pool:
            starts = pool.starts
            for stage in todo:
                start = time.perf_counter()
                if stage == "attack":
                    attack(store, cfg, round_, pool.get(players.attacker), players.attacker)
                elif stage == "respond":
                    respond(store, cfg, round_, pool.get(players.defender), players.defender)
                    pool.release()  # the reward model loads next
                elif stage == "score":
                    _score(store, cfg, round_)
                elif stage == "resample":
                    resample(store, cfg, round_, pool, players.defender, scorer_name(cfg))
                elif stage == "select":
                    selected = select_round(store, cfg.select, round_, scorer_name(cfg))
                    if not selected.details["pairs"]:
                        log.warning(
                            "round %d: 0 pairs: no prompt's best response beats its worst by more than "
                            "select.margin=%g (identical or tied responses give no pair)",
                            round_,
                            cfg.select.margin,
                        )
                report.ran.append(stage)
                report.engine_starts = pool.starts - starts
                report.seconds[stage] = time.perf_counter() - start
                log.info("round %d: %s done in %.1fs", round_, stage, report.seconds[stage])
    return report


def lora_room(cfg: SparringConfig) -> int:
    """The adapter rank the game's last round plays with (each trained round stacks `train_*.lora.r` onto a
    player, `core.adapters`), so an engine started with room for it serves every round; 0 for merged players."""
    if not cfg.vllm.serve_adapters:
        return 0
    rank = max(cfg.train_defender.lora.r, cfg.train_attacker.lora.r) * max(1, cfg.run.rounds - 1)
    return min(rank, VLLM_RANKS[-1])


def round_configs(cfg: SparringConfig, players: Players) -> dict[str, dict[str, Any]]:
    """What each round stage depends on (`core.config.STAGE_KEYS`), the models that play it included."""
    configs = {stage: stage_config(cfg, stage) for stage in ROUND_STAGES}
    configs["attack"]["attacker.model"] = players.attacker
    for stage in ("respond", "resample"):
        configs[stage]["defender.model"] = players.defender
    return configs


def _preflight(cfg: SparringConfig, round_: int, players: Players, done: set[str]) -> None:
    """Fail fast on unusable models and seed files, checking only what the remaining stages read.

    The attack stage reads the seed file only after its vLLM engine has loaded (a minute on CPU), so a
    missing or malformed seed file is caught here instead.
    """
    if "attack" not in done:
        if round_ == 1:
            load_seed_file(cfg.attacker.seed_file)
        check_chat_model(players.attacker, "attacker")
    if "respond" not in done or ("resample" not in done and cfg.defender.resample.max_samples > 0):
        check_chat_model(players.defender, "defender")
    if "score" not in done:
        check_scorer(cfg)  # a bad model, label or class fails now, not after respond


def plan(cfg: SparringConfig, round_: int) -> str:
    """`--dry-run`: what `run_round` would do, from the config and (read-only) the store; loads nothing.

    Local models are checked like the preflight does (directory, config.json, chat template or one label);
    Hub ids by name only; the players of a round after 1 are the models the store says were trained."""
    from core.preflight import describe_model
    from data.store import store_path

    done: set[str] = set()
    attacker, defender = cfg.attacker.model, cfg.defender.model
    if store_path(cfg.run.dir).is_file():
        with Store.for_run(cfg.run.dir, read_only=True) as store:
            done = store.done_stages(round_)
            attacker = store.model_for("attacker", round_) or attacker
            defender = store.model_for("defender", round_) or defender
    elif round_ > 1:
        attacker, defender = (
            f"(the {role} trained on round {round_ - 1})" for role in ("attacker", "defender")
        )
    todo = [s for s in ROUND_STAGES if s not in done]
    check = round_ == 1 or store_path(cfg.run.dir).is_file()
    if check and "attack" in todo and round_ == 1:
        load_seed_file(cfg.attacker.seed_file)
    for ref, role in ((attacker, "attacker"), (defender, "defender")):
        if check and not is_tiny(ref):
            check_chat_model(ref, role)  # local: a model directory with a chat template; Hub id: by name
    check_scorer(cfg, build_tiny=False)
    scorer = describe_scorer(cfg)
    engines_ = [("attack", attacker), ("respond", defender)]
    if cfg.defender.resample.max_samples > cfg.defender.n:
        engines_.append(("resample", defender))
    engines_ = [(stage, _served(model)) for stage, model in engines_]
    lines = [
        f"dry run of round {round_} in {cfg.run.dir}: nothing is loaded or written",
        f"  attacker  {describe_model(attacker, 'attacker') if check else attacker}",
        f"  defender  {describe_model(defender, 'defender') if check else defender}",
        f"  scorer    {scorer}",
        f"  stages    {', '.join(todo) or 'none (the round is done)'}"
        + (f"; already done: {', '.join(s for s in ROUND_STAGES if s in done)}" if done else ""),
        "  vLLM      one engine at a time, started once per base model: "
        + "; ".join(f"{stage} -> {model}" for stage, model in engines_ if stage in todo)
        + f" (dtype {cfg.vllm.dtype}, max_model_len {cfg.vllm.max_model_len}, "
        f"gpu_memory_utilization {cfg.vllm.gpu_memory_utilization}, tp {cfg.vllm.tensor_parallel_size})",
        f"  writes    {Path(cfg.run.dir) / 'sparring.duckdb'}: {cfg.attacker.num_prompts} prompts x {cfg.defender.n} "
        f"answers (up to {max(cfg.defender.n, cfg.defender.resample.max_samples)} where they tie), scores, "
        f"hard prompts, pairs",
    ]
    return "\n".join(lines)


def _served(model: str) -> str:
    """How vLLM runs a player, for the dry run: a trained adapter plays on its base model's engine."""
    return f"{adapter_base(model)} + LoRA {model}" if is_adapter(model) else model


def _score(store: Store, cfg: SparringConfig, round_: int) -> None:
    from score.stage import score_round

    scorer = build_scorer(cfg)
    try:
        score_round(store, round_, scorer, scorer_name(cfg))
    finally:
        scorer.close()


def summary(cfg: SparringConfig, round_: int, engine_starts: int | None = None) -> str:
    """A one-screen text summary of a round, read back from the store (and the vLLM engines this run started)."""
    with Store.for_run(cfg.run.dir, read_only=True) as store:
        counts = {
            t: store.count(t, round_) for t in ("prompts", "responses", "scores", "hard_prompts", "pairs")
        }
        stats = store.rows(
            "SELECT avg(value) AS mean, min(value) AS min, max(value) AS max, stddev_pop(value) AS std FROM scores WHERE round = ?",
            [round_],
        )[0]
        margin = store.scalar("SELECT avg(margin) FROM pairs WHERE round = ?", [round_])
        hard_with_pair = store.scalar(sql.HARD_WITH_PAIR, [round_])
        log_rows = [r for r in store.rows(sql.STAGE_LOG) if r["round"] == round_]
    lines = [f"Sparring round {round_}  ({cfg.run.dir})", ""]
    lines += [f"  {name:<13}{n:>8}" for name, n in counts.items()]
    if stats["mean"] is not None:
        lines += [
            "",
            f"  reward  mean {stats['mean']:.4f}  std {stats['std']:.4f}  min {stats['min']:.4f}  max {stats['max']:.4f}",
        ]
    if margin is not None:
        lines.append(f"  pairs   mean margin {margin:.4f}")
    if counts["hard_prompts"]:
        lines.append(
            f"  pair yield  {hard_with_pair}/{counts['hard_prompts']} hard prompts have a pair "
            f"({hard_with_pair / counts['hard_prompts']:.0%})"
        )
    if engine_starts is not None:
        lines.append(f"  vLLM engine starts in this run: {engine_starts}")
    lines += ["", "  stage         rows   seconds"]
    lines += [f"  {r['stage']:<13}{r['rows']:>5}{r['seconds']:>10.1f}" for r in log_rows]
    return "\n".join(lines)


def main() -> None:
    from core.cli import base_parser, config_from_args, main_guard, setup_logging

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--force", choices=ROUND_STAGES, help="redo this stage and the ones after it")
    parser.add_argument(
        "--drop-later", action="store_true", help="with --force: also remove every later round and its models"
    )
    args = parser.parse_args()
    setup_logging(args.verbose)

    def go() -> None:
        cfg = config_from_args(args)
        round_ = args.round if args.round is not None else 1
        if args.dry_run:
            print(plan(cfg, round_))
            return
        report = run_round(cfg, round_, force=args.force, drop_later=args.drop_later)
        print(summary(cfg, round_, report.engine_starts))

    main_guard(go)


if __name__ == "__main__":
    main()
