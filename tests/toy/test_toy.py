"""The toy-world experiment, reduced for CI: warm-up, two rounds of the game, training, evaluations, report.

One seed, two rounds, the `game` arm, through the CLI: every round has pairs (the game does not stall). It checks the two directions the full experiment is
about (README "Toy world"): (a) the attacker's reward-weighted step raises attack success on the same
defender; (b) the defender trained on the round does better on held-out prompts than the one that played it.
The warm-up model is cached in .sparring/ (like the tiny models), so only the first run pays for it.

The attacker takes the README's "stronger step" (8 epochs at lr 3e-3, not the config's 2 at 1e-3): with one
seed and one round the config's step lifts attack success by a single judged response on seed 0 (0.224 ->
0.229), too close to assert; the stronger one lifts it to 0.557. Averaged over 3 seeds the config's step lifts
it in every round (README "Toy world").
"""

import shutil

import pytest

from data.store import Store
from tests.conftest import REPO, run_cli
from toy import sql

pytestmark = pytest.mark.slow

WORLD = REPO / "toy" / "configs" / "toy_world.yaml"
WARM_CACHE = REPO / ".sparring" / "toy-warmup"


def _rate(store, round_, kind, failed):
    value = store.scalar(
        "SELECT avg(CASE WHEN ? THEN (reward < 0)::INT ELSE reward END) FROM evals WHERE round = ? AND kind = ?",
        [failed, round_, kind],
    )
    return float(value)


def test_toy_experiment_directions(tmp_path):
    from toy.warmup import warmup

    warmup(WORLD, WARM_CACHE, seed=0)  # cached: reused when the world file and recipe are unchanged
    shutil.copytree(WARM_CACHE, tmp_path / "warmup" / "seed-0")
    args = ["--config", str(REPO / "toy" / "configs" / "toy.yaml"), "--set", f"run.dir={tmp_path}",
            "--set", "run.rounds=2", "--arms", "game", "--seeds", "0",
            "--set", "train_attacker.epochs=8", "--set", "train_attacker.learning_rate=3e-3"]  # fmt: skip
    result = run_cli("toy.experiment", *args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "game" / "seed-0"
    with Store.for_run(run, read_only=True) as store:
        assert store.stage_done(1, "train_defender") and store.stage_done(1, "train_attacker")
        pairs = [store.count("pairs", r) for r in (1, 2)]
        assert store.scalar(sql.HAS_EVALS) == 1
        before = _rate(store, 1, "attack_before", True)
        after = _rate(store, 1, "attack_after", True)
        held_1 = _rate(store, 1, "heldout", False)
        held_2 = _rate(store, 2, "heldout", False)
    assert all(n > 0 for n in pairs), f"pairs per round {pairs}: the game stalled"
    assert after > before, f"(a) attack success {before:.3f} -> {after:.3f} after the attacker's step"
    assert held_2 > held_1, f"(b) held-out reward {held_1:.3f} -> {held_2:.3f} after the defender's step"
    report = tmp_path / "REPORT.md"
    assert report.is_file() and "## Comparison" in report.read_text()
    assert (tmp_path / "attack_success.png").stat().st_size > 0
