"""Config: YAML + dotted overrides into typed dataclasses; every mistake is a one-line ConfigError."""

import pytest

from core.config import SparringConfig, load_config
from core.errors import ConfigError
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo.yaml"


def test_demo_config_loads_and_overrides_apply():
    cfg = load_config(DEMO, ["defender.n=8", "select.strategy=eva", "vllm.extra={data_parallel_size: 2}"])
    assert isinstance(cfg, SparringConfig)
    assert cfg.defender.n == 8 and cfg.select.strategy == "eva"
    assert cfg.vllm.extra == {"data_parallel_size": 2}
    assert cfg.attacker.model == "tiny:policy"
    assert isinstance(cfg.select.margin, float)


def test_config_round_trips_through_json():
    import json

    cfg = load_config(DEMO)
    assert json.loads(cfg.to_json())["defender"]["n"] == cfg.defender.n


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["defender.nn=3"], "unknown config key 'defender.nn'"),
        (["nosection.x=1"], "unknown config key 'nosection'"),
        (["defender.n=four"], "defender.n='four' has the wrong type; expected an integer"),
        (["defender.n=1"], "defender.n=1 is out of range; expected an integer >= 2"),
        (["attacker.num_prompts=0"], "attacker.num_prompts=0 is out of range"),
        (["attacker.num_prompts=-3"], "attacker.num_prompts=-3 is out of range"),
        (["select.strategy=random"], "select.strategy='random' is not allowed; expected one of: gpo, eva"),
        (
            ["vllm.enforce_eager=maybe"],
            "vllm.enforce_eager='maybe' has the wrong type; expected true or false",
        ),
        (["defender.top_p=.nan"], "defender.top_p=nan is out of range"),
        (["defender"], "override 'defender' has no '='"),
        (["defender.n.x=1"], "goes inside 'n', which is not a section"),
    ],
)
def test_bad_overrides_name_the_value(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  dir: x\n  seed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(bad)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections, got list"):
        load_config(bad)


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "vllm.extra={model: other/model}",
            "vllm.extra.model is set by Sparring from attacker.model / defender.model",
        ),
        ("vllm.extra={seed: 3}", "vllm.extra.seed is set by Sparring from run.seed"),
        (
            "vllm.extra={max_model_len: 9}",
            "vllm.extra.max_model_len is set by Sparring from vllm.max_model_len",
        ),
        ("run.dir=", "run.dir='' is out of range; expected a non-empty path"),
        ("attacker.seed_file= ", "attacker.seed_file='' is out of range; expected a non-empty path"),
    ],
)
def test_owned_keys_and_empty_paths_are_refused(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_alias_expansion_is_bounded(tmp_path):
    """A "billion laughs" document loads cheaply (PyYAML shares aliased nodes) but expands when copied."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("vllm:\n  extra:\n" + "".join(f"    {line}\n" for line in levels))
    with pytest.raises(ConfigError, match="expands to more than 100000 values"):
        load_config(bomb)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="bytes; expected at most"):
        load_config(big)


def test_resampling_failures_needs_a_failure_rule(tmp_path):

    with pytest.raises(ConfigError, match=r"^defender.resample.failures=true needs a failure rule"):
        load_config(None, ["defender.resample.failures=true"])  # a reward model has none of its own
    assert (
        load_config(
            None, ["defender.resample.failures=true", "reward.failure_below=0"]
        ).reward.failure_threshold()
        == 0
    )
    assert load_config(None, ["reward.kind=guard"]).reward.failure_threshold() == 0.5
    assert (
        load_config(None, ["reward.kind=guard", "reward.guard.output=log_odds"]).reward.failure_threshold()
        == 0
    )
