"""The one skeleton both trainers run, read top to bottom (torchtune's recipe; TRL's config + Trainer per role).

    already done? -> read the round's data -> (--force: forget the old model) -> pick the parent
    -> load it, build the role's Trainer, resume from a checkpoint, train, save the adapter and the player
    -> record the model (and the role's own rows) with the stage-log row in one transaction

A role (`train.defender.DEFENDER`, `train.attacker.ATTACKER`) says only what differs: its data, its Trainer (the
loss) and what it records.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from core import faults
from core.config import SparringConfig, stage_config
from core.errors import StageError
from data.lineage import check_drift, inputs_digest, training_inputs
from data.store import Store
from train.common import (
    ModelPaths,
    already_trained,
    forget_trained,
    last_checkpoint,
    launch_state,
    load_policy,
    lora_details,
    model_paths,
    model_row,
    parent_model,
    save_trained,
    store_for_reading,
    stored_model,
    use_bf16,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CarryOver:
    """What `Role.read` returns when the round gives nothing to train on and the config says to go on."""

    reason: str


class Role:
    """What one player's training needs to say; the skeleton (`train_round`) does the rest."""

    name: str  # attacker | defender: its model directory and `models.role`
    stage: str  # its stage in the store's log

    def settings(self, cfg: SparringConfig) -> Any:
        """Its config section (`train_defender` / `train_attacker`: start_from, bf16, lora, ...)."""
        raise NotImplementedError

    def check(self, cfg: SparringConfig) -> None:
        """Config rules to enforce before anything is read."""

    def read(self, store: Store, cfg: SparringConfig, round_: int) -> Any:
        """The round's training data; a StageError when there is nothing to train on, or a `CarryOver` when
        the config says the model goes on unchanged."""
        raise NotImplementedError

    def describe(self, data: Any) -> str:
        """How much it trains on, for the log line ("24 pairs")."""
        raise NotImplementedError

    def trainer(self, cfg: SparringConfig, model: Any, tokenizer: Any, data: Any, output_dir: Path) -> Any:
        """The role's `transformers.Trainer` (its loss) on `model`, with a fresh LoRA."""
        raise NotImplementedError

    def details(self, cfg: SparringConfig, data: Any) -> dict[str, Any]:
        """What the `models` row records about the training, beyond the trainer's metrics."""
        return {}

    def record(self, store: Store, round_: int, data: Any, model: pa.Table) -> int:
        """Write the `models` row and the role's own rows (inside the stage's transaction); the rows logged."""
        return store.insert("models", model)


def train_round(
    role: Role, cfg: SparringConfig, round_: int, force: bool = False, drop_later: bool = False
) -> dict[str, Any]:
    """Train, save and record round `round_`'s model of `role`; returns its `models` row (the stored one if
    the stage is done and not forced; `drop_later` lets `force` remove the rounds played after it)."""
    if round_ < 1:
        raise StageError(f"--round {round_} is not a round; expected an integer >= 1")
    role.check(cfg)
    settings = role.settings(cfg)
    paths = model_paths(cfg, round_, role.name)
    # Read everything, then close the store: training can take hours and must not hold DuckDB's write lock.
    state = launch_state()
    configs = {role.stage: stage_config(cfg, role.stage)}
    with store_for_reading(cfg, state) as store:
        if already_trained(store, round_, role.stage, force):
            check_drift(store, round_, [role.stage], configs)  # done with other values: not this model
            return stored_model(store, round_, role.name)
        data = role.read(store, cfg, round_)
        inputs = inputs_digest(training_inputs(store, round_, role.name))
        if force:
            forget_trained(store, state, round_, role.stage, paths, drop_later)
        parent = parent_model(store, cfg, role.name, round_, settings.start_from)

    started = time.perf_counter()
    if isinstance(data, CarryOver):
        return _carry_over(role, cfg, round_, parent, data, state)
    log.info("round %d: training the %s from %s on %s", round_, role.name, parent, role.describe(data))
    if state.is_main_process:
        claim_checkpoints(paths, inputs, round_, role.name)
    metrics = fit(role, cfg, parent, data, paths)
    if not state.is_main_process:
        return {}  # under `accelerate launch`, the main process saves and records the model
    details = {
        **role.details(cfg, data),
        "start_from": settings.start_from,
        "lora": lora_details(settings.lora),
        "inputs": inputs,  # digest of what it was trained on (data.check compares it with the store's)
        **metrics,
    }
    with Store.for_run(cfg.run.dir) as store:
        store.stage_configs = configs
        with store.stage(round_, role.stage, started) as result:
            result.rows = role.record(
                store, round_, data, model_row(round_, role.name, paths, parent, details)
            )
            result.details = {"parent": parent, "path": str(paths.player), **details}
        row = stored_model(store, round_, role.name)
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    return row


def _carry_over(
    role: Role, cfg: SparringConfig, round_: int, parent: str, why: CarryOver, state: Any
) -> dict[str, Any]:
    """Record that round `round_` trained nothing: its `models` row names the parent, so the next round plays
    with the same model, and the stage is logged, so the game goes on (and a report can show the gap)."""
    log.warning("round %d: %s; the %s carries over unchanged (%s)", round_, why.reason, role.name, parent)
    if not state.is_main_process:
        return {}
    details = {"carried_over": True, "reason": why.reason}
    with Store.for_run(cfg.run.dir) as store:
        store.stage_configs = {role.stage: stage_config(cfg, role.stage)}
        with store.stage(round_, role.stage) as result:
            result.rows = store.insert("models", model_row(round_, role.name, None, parent, details))
            result.details = {"parent": parent, "path": parent, **details}
        return stored_model(store, round_, role.name)


INPUTS_FILE = "inputs.json"


def claim_checkpoints(paths: ModelPaths, inputs: str, round_: int, role: str) -> None:
    """Checkpoints carry the digest of the data they were trained on (`inputs.json`). Ones left by a run on
    other data — the round was re-selected, re-scored or re-played since — are removed, never resumed: a
    resumed run would record a model as trained on data it never saw."""
    marker = paths.checkpoints / INPUTS_FILE
    recorded = json.loads(marker.read_text()).get("inputs") if marker.is_file() else None
    if recorded != inputs and last_checkpoint(paths.checkpoints):
        log.warning(
            "round %d: the %s's checkpoints in %s were trained on other data (inputs %s, now %s); training from "
            "the start",
            round_, role, paths.checkpoints, recorded or "unrecorded", inputs,
        )  # fmt: skip
        shutil.rmtree(paths.checkpoints)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"inputs": inputs}))


def fit(role: Role, cfg: SparringConfig, parent: str, data: Any, paths: ModelPaths) -> dict[str, Any]:
    """Train a fresh LoRA on `parent`, resuming from a checkpoint if a killed run left one; saves the adapter and
    the player (stacked adapter or merged model; main process only)."""
    model, tokenizer = load_policy(parent, use_bf16(role.settings(cfg).bf16))
    trainer = role.trainer(cfg, model, tokenizer, data, paths.checkpoints)
    resume = last_checkpoint(paths.checkpoints)
    if resume:
        log.info("resuming from %s", resume)
    output = trainer.train(resume_from_checkpoint=resume)
    faults.point(f"{role.stage}:save")
    if trainer.accelerator.is_main_process:
        save_trained(trainer.model, tokenizer, paths, parent)
    history = [h for h in trainer.state.log_history if "loss" in h]
    loss = output.training_loss
    if resume and not loss and history:
        # resumed from a checkpoint at the last step (e.g. the save failed on a full disk): the Trainer ran 0
        # steps and reports 0.0; the restored log has the run's real losses
        loss = sum(h["loss"] for h in history) / len(history)
    return {
        "steps": trainer.state.global_step,
        "train_loss": loss,
        "last_log": history[-1] if history else {},
        "processes": trainer.accelerator.num_processes,
    }


def plan(role: Role, cfg: SparringConfig, round_: int) -> str:
    """`--dry-run`: what `train_round` would train, from what, and where it saves; loads nothing."""
    from core.preflight import describe_model
    from data.store import store_path

    settings = role.settings(cfg)
    base = cfg.attacker.model if role.name == "attacker" else cfg.defender.model
    parent, state = base, "no store yet: run the round first"
    if round_ > 1 and settings.start_from == "last":
        parent = f"(the {role.name} trained on round {round_ - 1})"
    if store_path(cfg.run.dir).is_file():
        with Store.for_run(cfg.run.dir, read_only=True) as store:
            trained = store.model_for(role.name, round_) if settings.start_from == "last" else None
            parent = trained or base
            done, selected = store.stage_done(round_, role.stage), store.stage_done(round_, "select")
        state = (
            "already trained (--force to redo)" if done else "ready" if selected else "round not selected yet"
        )
    paths = model_paths(cfg, round_, role.name)
    lora = settings.lora
    return "\n".join(
        [
            f"dry run of {role.stage} for round {round_} in {cfg.run.dir}: nothing is loaded or written",
            f"  state     {state}",
            f"  parent    {describe_model(parent, role.name) if parent == base else parent}",
            f"  trains    a fresh LoRA r={lora.r} alpha={lora.alpha} on {', '.join(lora.target_modules)}; "
            + ", ".join(
                f"{k}={v}" for k, v in stage_config(cfg, role.stage).items() if not k.endswith(".lora")
            ),
            f"  saves     {paths.adapter} and {paths.player} (what round {round_ + 1}'s vLLM "
            + ("serves as a LoRA adapter on the base model)" if paths.serve_adapters else "loads)"),
        ]
    )


def trainer_cli(doc: str, role: Role, train: Callable[..., dict[str, Any]]) -> None:
    """The `python -m train.<role>` command: config + `--round` + `--force`, one line naming the saved model."""
    from core.cli import base_parser, config_from_args, main_guard, setup_logging

    parser = base_parser(doc.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="retrain even if the stage is in the store")
    parser.add_argument(
        "--drop-later", action="store_true", help="with --force: also remove every later round and its models"
    )
    args = parser.parse_args()
    setup_logging(args.verbose)

    def go() -> None:
        round_ = args.round if args.round is not None else 1
        if args.dry_run:
            print(plan(role, config_from_args(args), round_))
            return
        row = train(config_from_args(args), round_, args.force, drop_later=args.drop_later)
        if row:  # the main process's; the others of an `accelerate launch` return nothing
            print(f"{role.name} of round {row['round']}: {row['path']} (from {row['parent']})")

    main_guard(go)
