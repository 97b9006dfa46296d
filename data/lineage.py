"""Which models play round r: the base models from config, or the ones trained on earlier rounds.

`train.defender` / `train.attacker` record each trained model in the `models` table; round r plays with
the newest model trained on a round before r (`start_from` only chooses what training starts from).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.config import SparringConfig
from core.errors import ConfigError, StageError
from core.tiny_models import resolve_model
from data import sql
from data.store import Store


@dataclass(frozen=True)
class Players:
    attacker: str  # what vLLM loads (a path or Hub id)
    defender: str


def players_for_round(store: Store, cfg: SparringConfig, round_: int) -> Players:
    """The recorded players of a round that already started, else chosen now."""
    info = store.round_info(round_)
    if info is not None:
        return Players(info["attacker_model"], info["defender_model"])
    return choose_players(store, cfg, round_)


def choose_players(store: Store, cfg: SparringConfig, round_: int) -> Players:
    """The players this config gives round `round_`: the newest models trained on earlier rounds, else the base."""
    return Players(
        attacker=store.model_for("attacker", round_) or base_model(cfg, "attacker"),
        defender=store.model_for("defender", round_) or base_model(cfg, "defender"),
    )


def check_drift(store: Store, round_: int, stages: Iterable[str], configs: dict[str, dict[str, Any]]) -> None:
    """A done stage ran with the values it recorded; resuming with others would mix two configs in one round.
    One line naming the first key that differs, both values, and the way out."""
    for stage in stages:
        recorded = store.recorded_config(round_, stage)
        current = json.loads(json.dumps(configs.get(stage, {})))
        if not recorded:
            continue
        changed = [k for k in recorded if k in current and recorded[k] != current[k]]
        if changed:
            k = changed[0]
            more = f" (and {', '.join(changed[1:])})" if len(changed) > 1 else ""
            raise ConfigError(
                f"round {round_}'s {stage} stage ran with {k}={recorded[k]!r}, but this config gives "
                f"{k}={current[k]!r}{more}; expected the same values to resume, or --force {stage} to redo it"
            )


def base_model(cfg: SparringConfig, role: str) -> str:
    ref = cfg.attacker.model if role == "attacker" else cfg.defender.model
    return resolve_model(ref, cfg.run.tiny_models_dir)


def check_history(store: Store, round_: int, redo: str, drop_later: bool) -> list[Path]:
    """Before redoing `redo` of round `round_`: later rounds were played from its output (its prompts, pairs,
    models), so redoing it under them would leave a history that never happened. Refused unless `drop_later`;
    then returns the later rounds' model directories, to delete once the store has dropped their rows."""
    later = store.later_rounds(round_)
    if not later:
        return []
    if not drop_later:
        raise StageError(
            f"{redo} on round {round_} would rewrite what round(s) {', '.join(map(str, later))} were played from; "
            "expected --drop-later to remove those rounds and their models too, or another run.dir"
        )
    return sorted(
        {Path(row[3]).parent for row in store.execute(sql.LATER_MODELS, [round_]) if row[3] is not None}
    )


def remove_model_dirs(dirs: list[Path]) -> None:
    """Delete the model directories of dropped rounds (after the store no longer names them)."""
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


def round_scorer(store: Store, round_: int) -> str:
    """The scorer the round was played with (recorded when it began), else the only one its scores use."""
    info = store.round_info(round_)
    if info is not None:
        return str(info["scorer"])
    scorers = [r["scorer"] for r in store.rows(sql.ROUND_SCORERS, [round_])]
    if len(scorers) != 1:
        raise StageError(
            f"round {round_} has scores from {len(scorers)} scorers ({', '.join(scorers) or 'none'}) and no "
            "recorded round scorer; expected exactly one"
        )
    return scorers[0]


def training_inputs(store: Store, round_: int, role: str) -> pa.Table:
    """What a trainer of `role` reads from round `round_`: the defender its pairs, the attacker its prompts with
    their mean scores. A trained model and its checkpoints carry the digest of this table."""
    if role == "defender":
        return store.arrow(sql.ROUND_PAIRS, [round_])
    return store.arrow(sql.ATTACKER_PROMPTS, {"round": round_, "scorer": round_scorer(store, round_)})


def inputs_digest(table: pa.Table) -> str:
    """A stable digest of a table's values (column names and rows, in order; numbers to 9 decimals, so an
    aggregate summed in another order is the same input)."""
    import pyarrow.compute as pc

    columns = {
        name: (pc.round(col, 9) if pa.types.is_floating(col.type) else col).to_pylist()
        for name, col in zip(table.column_names, table.columns, strict=True)
    }
    payload = json.dumps({"columns": table.column_names, "rows": columns}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def stale_models(store: Store) -> list[str]:
    """Trained models whose recorded input digest no longer matches what their round's data gives: a model
    recorded as trained on pairs (or prompts) it never saw."""
    problems = []
    for row in store.rows(sql.MODEL_DETAILS):
        recorded = json.loads(row["details"] or "{}").get("inputs")
        if not recorded:
            continue  # carried over, or trained before digests were recorded
        try:
            now = inputs_digest(training_inputs(store, row["round"], row["role"]))
        except StageError:
            now = "unreadable"
        if now != recorded:
            problems.append(
                f"the {row['role']} model of round {row['round']} was trained on data that is no longer in the "
                f"store (inputs {recorded}, the store now gives {now})"
            )
    return problems
