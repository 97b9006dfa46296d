"""Training scales out through `accelerate launch`, not through Sparring's config: the DPOConfig that
`train.defender` builds from `train_defender.*` carries no parallelism of its own (no FSDP/DeepSpeed settings,
one process when run plainly), so whatever `accelerate config` / `accelerate launch` sets up (DDP, FSDP,
DeepSpeed ZeRO-3) is what the trainer's Accelerator uses. What a CPU box can show: the arguments are built
unchanged from our config, and a real launch with two CPU processes (DDP over gloo) trains a step with
world size 2. FSDP and ZeRO-3 need GPUs and are not exercised here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_DIR, make_config


class _Captured(Exception):
    pass


def test_dpo_args_come_unchanged_from_our_config(tmp_path, tiny_models, monkeypatch):
    import trl

    import train.defender as defender
    from bench.dpo import synthetic_pairs, tiny_tokenizer
    from data.tiny_models import resolve_model

    seen = {}

    def fake_trainer(*args, **kwargs):
        seen.update(kwargs)
        raise _Captured

    monkeypatch.setattr(trl, "DPOTrainer", fake_trainer)
    cfg = make_config(
        tmp_path,
        "train_defender.batch_size=3",
        "train_defender.grad_accum=5",
        "train_defender.learning_rate=2e-5",
    )
    dataset = synthetic_pairs(tiny_tokenizer(str(TINY_DIR)), 4, 8, 8)
    with pytest.raises(_Captured):
        defender._fit(
            cfg, resolve_model("tiny:policy", TINY_DIR), dataset, defender.model_paths(cfg, 1, "defender")
        )
    args = seen["args"]
    assert args.per_device_train_batch_size == 3
    assert args.gradient_accumulation_steps == 5
    assert args.learning_rate == 2e-5
    assert args.gradient_checkpointing is cfg.train_defender.gradient_checkpointing
    assert args.precompute_ref_log_probs is cfg.train_defender.precompute_ref_log_probs
    # No parallelism chosen by us: accelerate's launcher config decides.
    assert not args.fsdp and args.deepspeed is None
    assert args.world_size == 1  # a plain `python -m train.defender` is one process
    assert seen["peft_config"].r == cfg.train_defender.lora.r


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_trains_a_step(tmp_path, tiny_models):
    if not _has_accelerate():
        pytest.skip("accelerate is not installed")
    proc = subprocess.run(
        [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "tests.bench.accelerate_probe", str(tmp_path),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        # No GPU: the launcher's torchrun starts 2 processes; accelerate joins them over gloo on the CPU.
        env={**os.environ, "ACCELERATE_USE_CPU": "true"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    probes = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("probe-*.json"))]
    assert sorted(p["process_index"] for p in probes) == [0, 1]
    for p in probes:
        assert p["num_processes"] == 2 and p["world_size"] == 2
        assert "MULTI_CPU" in p["distributed_type"]
        assert p["steps"] == 1


def _has_accelerate() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return False
    return True
