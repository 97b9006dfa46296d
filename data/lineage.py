"""Which models play round r: the base models from config, or the ones trained on earlier rounds.

`train.defender` / `train.attacker` record each trained model in the `models` table; round r plays with
the newest model trained on a round before r (`start_from` only chooses what training starts from).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import SparringConfig
from core.tiny_models import resolve_model
from data.store import Store


@dataclass(frozen=True)
class Players:
    attacker: str  # what vLLM loads (a path or Hub id)
    defender: str


def players_for_round(store: Store, cfg: SparringConfig, round_: int) -> Players:
    """The recorded players of a round that already started (resume keeps them), else chosen now."""
    info = store.round_info(round_)
    if info is not None:
        return Players(info["attacker_model"], info["defender_model"])
    return Players(
        attacker=store.model_for("attacker", round_) or base_model(cfg, "attacker"),
        defender=store.model_for("defender", round_) or base_model(cfg, "defender"),
    )


def base_model(cfg: SparringConfig, role: str) -> str:
    ref = cfg.attacker.model if role == "attacker" else cfg.defender.model
    return resolve_model(ref, cfg.run.tiny_models_dir)
