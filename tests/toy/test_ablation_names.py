"""Ablation folders name their recipe, and the report reads the name back: runs under `--set train_attacker.*`
overrides must land beside the config's, not on top of them."""

import dataclasses

import pytest

from core.config import load_config
from tests.conftest import REPO
from toy.experiment import ablation_name
from toy.report import ablation_label


@pytest.mark.parametrize(
    ("weight", "temperature", "epochs", "lr", "label"),
    [
        (0.0, 0.5, 2.0, 1e-3, "λ = 0, T = 0.5, 2 epochs, lr 0.001"),
        (2.5, 4.0, 8.0, 1e-5, "λ = 2.5, T = 4, 8 epochs, lr 1e-05"),  # a '-' inside the last field
    ],
)
def test_ablation_name_round_trips_to_its_report_label(weight, temperature, epochs, lr, label):
    cfg = load_config(REPO / "toy" / "configs" / "toy.yaml")
    step = dataclasses.replace(
        cfg.train_attacker, weight_temperature=temperature, epochs=epochs, learning_rate=lr
    )
    name = ablation_name(weight, dataclasses.replace(cfg, train_attacker=step))
    assert ablation_label(name) == label


def test_unknown_folder_names_are_shown_as_they_are():
    assert ablation_label("my-own-run") == "my-own-run"
