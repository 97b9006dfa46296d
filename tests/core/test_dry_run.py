"""`--dry-run` on the GPU recipes, here with no GPU and no network: every command checks the config, prints its
plan and loads and writes nothing (no run dir, no Hub cache, offline)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_cli

GPU_CONFIGS = sorted((REPO / "configs").glob("gpu-*.yaml"))


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("command", ["generate.round", "train.defender", "train.attacker", "game.play"])
def test_dry_run_plans_and_loads_nothing(tmp_path, config, command):
    assert GPU_CONFIGS, "no GPU recipe in configs/"
    run_dir, hf_home = tmp_path / "run", tmp_path / "hf-home"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    args = ["--config", str(config), "--set", f"run.dir={run_dir}", "--round", "1", "--dry-run"]
    result = run_cli(command, *args, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run" in result.stdout and "nothing is loaded or written" in result.stdout
    assert "Hub id: checked by name only" in result.stdout
    assert not run_dir.exists() and not hf_home.exists()


def test_dry_run_still_checks_what_it_can(tmp_path):
    bad = tmp_path / "no-such-model"
    result = run_cli(
        "generate.round", "--config", str(GPU_CONFIGS[0]), "--set", f"defender.model={bad}", "--dry-run",
        "--set", f"run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 2 and f"defender model '{bad}' does not exist" in result.stderr
    assert not (tmp_path / "run").exists()


def test_push_dry_run_names_what_it_would_publish(tmp_path):
    from tests.data.test_export import build_run

    cfg = build_run(tmp_path / "run")
    args = ["--set", f"run.dir={cfg.run.dir}", "--round", "1", "--repo", "org/name", "--dry-run"]
    result = run_cli("data.push", *args, env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "would publish round 1 (round_1)" in result.stdout
        and "the Hub dataset org/name (one commit)" in result.stdout
    )
