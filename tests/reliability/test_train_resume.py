"""SIGKILL in the middle of training (after an optimizer step, checkpoints on disk), then resume: the run picks
up from its last checkpoint and ends with the same model an uninterrupted run produces. Store filled by hand."""

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from data.check import check_store
from data.store import Store
from tests.conftest import REPO, TINY_DIR, run_cli
from tests.train.test_defender import fill

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY, KILL_AT = 6, 2, 5


def train(module: str, run_dir, fault: str | None = None):
    return run_cli(
        module,
        "--config", str(REPO / "configs" / "demo.yaml"), "--round", "1", "-v",
        "--set", f"run.dir={run_dir}", "--set", f"run.tiny_models_dir={TINY_DIR}",
        "--set", f"train_defender.max_steps={STEPS}", "--set", f"train_defender.save_steps={SAVE_EVERY}",
        "--set", "train_defender.batch_size=2",
        "--set", f"train_attacker.max_steps={STEPS}", "--set", f"train_attacker.save_steps={SAVE_EVERY}",
        "--set", "train_attacker.batch_size=2",
        env={"SPARRING_FAULT": fault} if fault else None,
    )  # fmt: skip


def adapter(run_dir, role: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "models" / "round-1" / role / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize(("module", "stage", "role"), [
    ("train.defender", "train_defender", "defender"),
    ("train.attacker", "train_attacker", "attacker"),
])  # fmt: skip
def test_training_killed_mid_run_resumes_from_its_checkpoint(tmp_path, tiny_models, module, stage, role):
    for name in ("reference", "crashed"):
        with Store.for_run(tmp_path / name) as store:
            fill(store, 1)
    assert train(module, tmp_path / "reference").returncode == 0

    crashed = tmp_path / "crashed"
    killed = train(module, crashed, fault=f"{stage}:step{KILL_AT}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = crashed / "models" / "round-1" / role / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    with Store.for_run(crashed, read_only=True) as s:
        assert stage not in s.done_stages(1) and s.count("models", 1) == 0 and check_store(s) == []

    resumed = train(module, crashed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "checkpoint-4" in resumed.stderr
    with Store.for_run(crashed, read_only=True) as s:
        assert stage in s.done_stages(1) and s.count("models", 1) == 1 and check_store(s) == []
    assert not checkpoints.exists()
    # same data order, RNG state restored from the checkpoint: the same adapter as the uninterrupted run
    want, got = adapter(tmp_path / "reference", role), adapter(crashed, role)
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6)


def test_a_run_killed_while_saving_records_its_real_loss_on_resume(tmp_path, tiny_models):
    """Killed after the last step, before the model is saved (a full disk while saving): the resumed run
    restores the last checkpoint, trains 0 steps, and used to record train_loss 0.0."""
    run = tmp_path / "run"
    with Store.for_run(run) as store:
        fill(store, 1)
    killed = train("train.defender", run, fault="train_defender:save")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert train("train.defender", run).returncode == 0
    with Store.for_run(run, read_only=True) as s:
        details = json.loads(s.scalar("SELECT details FROM models WHERE role = 'defender'"))
        assert check_store(s) == []
    assert details["steps"] == STEPS and details["train_loss"] > 0
