"""Training scales out through `accelerate launch`, not through Sparring's config: the `DPOConfig` that
`train.defender` builds from `train_defender.*` carries no parallelism of its own, so whatever
`accelerate config` / `accelerate launch` sets up (DDP, FSDP, DeepSpeed ZeRO-3) is what the trainer uses.
What a CPU box can show: the arguments come unchanged from our config, and `accelerate launch` of the real
`python -m train.defender` with two CPU processes (DDP over gloo) trains, while only the main process touches
the store and saves. FSDP and ZeRO-3 need GPUs and are not exercised here."""

from __future__ import annotations

import json

import pytest

from core.adapters import is_adapter
from data.store import Store
from tests.conftest import REPO, TINY_DIR, make_config, run_cli
from tests.train.test_defender import fill


def test_dpo_args_come_unchanged_from_our_config(tmp_path):
    from train.defender import dpo_args

    cfg = make_config(
        tmp_path,
        "train_defender.batch_size=3",
        "train_defender.grad_accum=5",
        "train_defender.learning_rate=2e-5",
        "train_defender.loss=ipo",
    )
    args = dpo_args(cfg, tmp_path / "out", bf16=False)
    assert args.per_device_train_batch_size == 3
    assert args.gradient_accumulation_steps == 5
    assert args.learning_rate == 2e-5
    assert args.loss_type == ["ipo"]
    assert args.gradient_checkpointing is cfg.train_defender.gradient_checkpointing
    assert args.precompute_ref_log_probs is cfg.train_defender.precompute_ref_log_probs
    # no parallelism chosen by us: accelerate's launcher config decides
    assert not args.fsdp and args.deepspeed is None
    assert args.world_size == 1  # a plain `python -m train.defender` is one process


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_trains_the_round(tmp_path, tiny_models):
    run = tmp_path / "run"
    with Store.for_run(run) as store:
        fill(store, 1)
    proc = run_cli(
        "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "train.defender", "--round", "1",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--set", f"run.dir={run}", "--set", f"run.tiny_models_dir={TINY_DIR}",
        "--set", "train_defender.max_steps=2", "--set", "train_defender.batch_size=2",
        # no GPU: torchrun starts 2 processes and accelerate joins them over gloo on the CPU
        env={"ACCELERATE_USE_CPU": "true"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one line from the main process only; the store holds one model, recorded once
    assert proc.stdout.count("defender of round 1:") == 1, proc.stdout
    with Store.for_run(run, read_only=True) as store:
        rows = store.rows("SELECT * FROM models WHERE round = 1")
        assert store.stage_done(1, "train_defender")
    assert len(rows) == 1
    details = json.loads(rows[0]["details"])
    assert details["processes"] == 2 and details["steps"] == 2
    assert rows[0]["path"] == str(run / "models" / "round-1" / "defender" / "stacked")
    assert is_adapter(rows[0]["path"])  # the player: the adapter on the base, saved once by the main process
