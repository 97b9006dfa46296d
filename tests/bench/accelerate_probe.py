"""Run under `accelerate launch`: trains the tiny defender for one step with `train.defender._fit` (our config,
our DPOConfig) and writes what the trainer's Accelerator saw to OUT_DIR/probe-<rank>.json.

    accelerate launch --cpu --num_processes 2 -m tests.bench.accelerate_probe OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trl

import train.defender as defender
from bench.dpo import synthetic_pairs, tiny_tokenizer
from tests.conftest import TINY_DIR, make_config


def main() -> None:
    out = Path(sys.argv[1])
    seen: dict[str, Any] = {}
    base = trl.DPOTrainer

    class Probe(base):  # type: ignore[misc,valid-type]
        def __init__(self, *a: Any, **k: Any):
            super().__init__(*a, **k)
            state = self.accelerator.state
            seen.update(
                process_index=state.process_index,
                num_processes=state.num_processes,
                distributed_type=str(state.distributed_type),
                per_device_train_batch_size=self.args.per_device_train_batch_size,
                world_size=self.args.world_size,
            )

    trl.DPOTrainer = Probe
    defender.save_trained = lambda *a, **k: None  # one step proves the launch; no model needs saving
    cfg = make_config(
        out, "train_defender.max_steps=1", "train_defender.batch_size=2", "train_defender.save_steps=100"
    )
    tokenizer = tiny_tokenizer(str(TINY_DIR))
    dataset = synthetic_pairs(tokenizer, 8, 16, 16)
    from data.tiny_models import resolve_model

    metrics = defender._fit(
        cfg, resolve_model("tiny:policy", TINY_DIR), dataset, defender.model_paths(cfg, 1, "defender")
    )
    # One file per process: two processes printing to one pipe interleave their lines.
    (out / f"probe-{seen['process_index']}.json").write_text(json.dumps({**seen, "steps": metrics["steps"]}))


if __name__ == "__main__":
    main()
