"""Bad input, one case at a time: each fails with one line naming the bad value and what was expected, and
leaves the run store exactly as it was (same rows in every table, `check_store` clean).

Most cases are caught before any engine loads (config, preflight, store) and run in a second or two. The
cases that need the real defender (prompts longer than its context, identical responses) share one vLLM
load in one module-scoped run and are marked slow. Several cases go through the real CLI (`python -m ...`)
to show exit code 2 and no traceback.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import SelectConfig, load_config
from core.errors import ConfigError, InputError, ModelError, StageError, StoreError
from data.check import check_store
from data.prompts import load_seed_file
from data.records import PromptRecord, to_arrow
from data.select import select_round
from data.store import Store, store_path
from generate.round import run_round
from score.stage import score_round
from tests.conftest import REPO, TINY_DIR, make_config, run_cli
from tests.data.storefill import fill_round
from tests.reliability.bad_scorers import InfScorer, NaNScorer, NegInfScorer, ShortScorer

DEMO = REPO / "configs" / "demo.yaml"
SCORER = "tiny:reward"  # what the demo config stores scores under (scorer_name: the reward model ref)
REWARDS = {"a": [0.1, 0.9, 0.5], "b": [0.3, 0.2, 0.7], "c": [0.4, 0.4, 0.4]}
STAGES_1 = ("attack", "respond", "score", "resample", "select")


# ---------------------------------------------------------------------------------------------------------
# Helpers: a store with known contents, its snapshot, and the "one line, exit 2" check


def snapshot(run_dir: Path) -> dict[str, list[tuple]]:
    """Every row of every table (the whole store), to compare before and after a failed command."""
    with Store.for_run(run_dir, read_only=True) as s:
        tables = [r[0] for r in s.execute("SELECT table_name FROM information_schema.tables ORDER BY 1")]
        return {t: s.execute(f"SELECT * FROM {t} ORDER BY ALL") for t in tables}


def assert_unchanged(run_dir: Path, before: dict[str, list[tuple]]) -> None:
    assert snapshot(run_dir) == before
    with Store.for_run(run_dir, read_only=True) as s:
        assert check_store(s) == []


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one `sparring: error:` line, last on stderr, holding `fragments`."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("sparring: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def cli_round(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The round command on a store filled by hand: its "defender" is a name, not a model, so the resample
    stage (which would load it) is off."""
    return run_cli(
        "generate.round",
        "--config",
        str(DEMO),
        "--set",
        f"run.dir={run_dir}",
        "--set",
        f"run.tiny_models_dir={TINY_DIR}",
        "--set",
        "defender.resample.max_samples=0",
        *args,
    )


def new_store(run_dir: Path) -> Path:
    """An empty store (schema only): failed commands must not even add a `rounds` row to it."""
    Store.for_run(run_dir).close()
    return run_dir


def filled(run_dir: Path, until: str = "select") -> Path:
    """Round 1 begun and filled by hand up to stage `until` (attack..select), no vLLM needed."""
    with Store.for_run(run_dir) as s:
        s.begin_round(1, "attacker", "defender", SCORER, "{}")
        fill_round(s, 1, REWARDS, scorer=SCORER)
        with s.stage(1, "resample"):  # nothing tied: the stage ran and added nothing
            pass
        select_round(s, SelectConfig(), 1, SCORER)
        later = STAGES_1[STAGES_1.index(until) + 1 :]
        if later:
            s.reset_from(1, later[0])
    return run_dir


@pytest.fixture
def complete_round_1(tmp_path: Path, tiny_models) -> Path:
    return filled(tmp_path / "run")


# ---------------------------------------------------------------------------------------------------------
# Config: YAML, keys, types, ranges (no store is opened; it must stay as it was)


def test_malformed_yaml_via_cli(tmp_path):
    run_dir = filled(tmp_path / "run")
    before = snapshot(run_dir)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"run:\n  dir: {run_dir}\n  seed: [1, 2\n")
    result = run_cli("generate.round", "--config", str(bad), "--round", "2")
    assert_one_line_error(result, f"config file '{bad}' is not valid YAML at line", "column")
    assert_unchanged(run_dir, before)


def test_unknown_config_key_via_cli(tmp_path):
    run_dir = filled(tmp_path / "run")
    before = snapshot(run_dir)
    result = cli_round(run_dir, "--round", "2", "--set", "defender.temprature=0.5")
    assert_one_line_error(
        result, "unknown config key 'defender.temprature'", "expected one of:", "temperature"
    )
    assert_unchanged(run_dir, before)


def test_unknown_key_in_yaml_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("select:\n  stratgy: eva\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert_one_line(err, "unknown config key 'select.stratgy'", "expected one of: strategy")


WRONG_TYPES = [
    ("defender.n=four", "defender.n='four' has the wrong type; expected an integer"),
    ("defender.n=2.5", "defender.n=2.5 has the wrong type; expected an integer"),
    ("attacker.temperature=hot", "attacker.temperature='hot' has the wrong type; expected a number"),
    ("vllm.enforce_eager=maybe", "vllm.enforce_eager='maybe' has the wrong type; expected true or false"),
    ("attacker.model=[a, b]", "attacker.model=['a', 'b'] has the wrong type; expected a string"),
    ("train_defender.lora.target_modules=q_proj", "has the wrong type; expected a list"),
    ("vllm.extra=3", "vllm.extra=3 has the wrong type; expected a mapping"),
    ("defender=3", "'defender' must be a mapping, got int 3"),
    ("attacker.mode=random", "attacker.mode='random' is not allowed; expected one of: gpo, eva"),
    (
        "reward.kind=bogus",
        "reward.kind='bogus' is out of range; expected reward_model, guard, combined or package",
    ),
]


@pytest.mark.parametrize(("override", "message"), WRONG_TYPES, ids=[o for o, _ in WRONG_TYPES])
def test_wrong_type(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert_one_line(err, message)


def test_exponent_without_a_dot_is_a_number_not_the_wrong_type(tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-4` as a string; a float key takes it as the number the user meant."""
    cfg_file = tmp_path / "lr.yaml"
    cfg_file.write_text("train_defender:\n  learning_rate: 1e-4\n")
    assert load_config(cfg_file, ["defender.top_p=1e-9"]).train_defender.learning_rate == 1e-4
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file, ["defender.n=1e3"])  # an integer key still wants an integer
    assert_one_line(err, "defender.n='1e3' has the wrong type; expected an integer")


@pytest.mark.parametrize(
    "override",
    [
        "attacker.num_prompts=0",
        "attacker.num_prompts=-3",
        "attacker.samples_per_parent=0",
        "attacker.max_tokens=0",
        "attacker.max_attempts=-1",
        "defender.n=0",
        "defender.n=-2",
        "defender.max_tokens=0",
        "defender.max_tokens=-64",
        "reward.batch_tokens=0",
        "reward.max_length=-1",
        "vllm.max_model_len=0",
        "run.rounds=0",
        "train_defender.batch_size=0",
        "select.hard_fraction=0",
        "select.margin=-0.1",
    ],
)
def test_zero_or_negative_counts(override):
    key, _, value = override.partition("=")
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    shown = repr(float(value)) if "." in value or key.startswith("select.") else value
    assert_one_line(err, f"{key}={shown} is out of range; expected")


def test_n_equal_1_is_refused_via_cli(tmp_path):
    """n=1 gives no pairs at all; the config refuses it before anything runs."""
    run_dir = filled(tmp_path / "run")
    before = snapshot(run_dir)
    result = cli_round(run_dir, "--round", "2", "--set", "defender.n=1")
    assert_one_line_error(result, "defender.n=1 is out of range; expected an integer >= 2", "pairs need two")
    assert_unchanged(run_dir, before)


def test_greedy_defender_is_refused():
    """temperature 0 with n >= 2: vLLM would refuse every request after minutes of loading; config refuses now."""
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["defender.temperature=0"])
    assert_one_line(err, "defender.temperature=0.0 is out of range; expected a number > 0")
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["attacker.temperature=0"])
    assert_one_line(err, "attacker.temperature=0.0 with attacker.samples_per_parent=4 is refused")
    assert (
        load_config(DEMO, ["attacker.temperature=0", "attacker.samples_per_parent=1"]).attacker.temperature
        == 0
    )


# ---------------------------------------------------------------------------------------------------------
# Models: preflight, before any engine loads (round 2 on a complete round 1)


@pytest.mark.parametrize("role", ["attacker", "defender", "reward"])
def test_missing_model_path(complete_round_1, tmp_path, role):
    before = snapshot(complete_round_1)
    missing = tmp_path / "no-such-model"
    cfg = make_config(complete_round_1, f"{role}.model={missing}")
    with pytest.raises(ModelError) as err:
        run_round(cfg, 2)
    assert_one_line(err, f"{role} model '{missing}' does not exist; expected a local model directory")
    assert_unchanged(complete_round_1, before)


def _without_chat_template(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((dst / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return dst


@pytest.mark.parametrize("role", ["attacker", "defender", "reward"])
def test_model_without_chat_template(complete_round_1, tmp_path, tiny_models, role):
    before = snapshot(complete_round_1)
    model = _without_chat_template(tiny_models["reward" if role == "reward" else "policy"], tmp_path / "m")
    cfg = make_config(complete_round_1, f"{role}.model={model}")
    with pytest.raises(ModelError) as err:
        run_round(cfg, 2)
    assert_one_line(
        err, f"{role} model '{model}' has no chat template; expected a tokenizer with chat_template"
    )
    assert_unchanged(complete_round_1, before)


@pytest.mark.parametrize("how", ["num_labels", "id2label"])
def test_reward_model_with_two_labels_via_cli(complete_round_1, tmp_path, tiny_models, how):
    before = snapshot(complete_round_1)
    model = tmp_path / "reward2"
    shutil.copytree(tiny_models["reward"], model)
    config = json.loads((model / "config.json").read_text())
    if how == "num_labels":
        config["num_labels"] = 2
    else:  # the way transformers saves a two-label classifier
        config["id2label"], config["label2id"] = {"0": "bad", "1": "good"}, {"bad": 0, "good": 1}
    (model / "config.json").write_text(json.dumps(config))
    result = cli_round(complete_round_1, "--round", "2", "--set", f"reward.model={model}")
    assert_one_line_error(result, f"reward model '{model}' has 2 labels; expected 1")
    assert_unchanged(complete_round_1, before)


def test_force_with_a_bad_model_deletes_nothing(complete_round_1, tmp_path):
    """Preflight runs before --force undoes stages, so a typo in a model path cannot cost the round's data.
    (A forced stage plays with the models the config gives now: here a defender deleted from disk.)"""
    gone = tmp_path / "deleted-defender"
    before = snapshot(complete_round_1)
    with pytest.raises(ModelError) as err:
        run_round(make_config(complete_round_1, f"defender.model={gone}"), 1, force="respond")
    assert_one_line(err, f"defender model '{gone}' does not exist")
    assert_unchanged(complete_round_1, before)


def test_custom_scorer_that_cannot_be_imported(complete_round_1):
    before = snapshot(complete_round_1)
    cfg = make_config(complete_round_1, "reward.kind=tests.reliability.no_such_module:Scorer")
    with pytest.raises(ConfigError) as err:
        run_round(cfg, 2)
    assert_one_line(
        err, "reward.kind='tests.reliability.no_such_module:Scorer' cannot be imported", "expected"
    )
    assert_unchanged(complete_round_1, before)


# ---------------------------------------------------------------------------------------------------------
# Rounds and stages


def test_round_2_before_round_1_is_complete_via_cli(tmp_path, tiny_models):
    run_dir = filled(tmp_path / "run", until="score")  # no select: round 1 is not complete
    before = snapshot(run_dir)
    result = cli_round(run_dir, "--round", "2")
    assert_one_line_error(result, "round 2 needs round 1 complete", "python -m generate.round --round 1")
    result = cli_round(run_dir, "--round", "3")
    assert_one_line_error(result, "round 3 needs round 2 complete")
    assert_unchanged(run_dir, before)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_round_number_via_cli(complete_round_1, value):
    before = snapshot(complete_round_1)
    result = cli_round(complete_round_1, "--round", value)
    assert_one_line_error(result, f"--round {value} is not a round; expected an integer >= 1")
    assert_unchanged(complete_round_1, before)


def test_round_that_is_not_a_number_via_cli(complete_round_1):
    before = snapshot(complete_round_1)
    result = cli_round(complete_round_1, "--round", "two")
    assert_one_line_error(result, "--round: invalid int value: 'two'", "--help")
    assert_unchanged(complete_round_1, before)


@pytest.mark.parametrize("stage", ["bogus", "train_defender"])
def test_force_unknown_stage_via_cli(complete_round_1, stage):
    before = snapshot(complete_round_1)
    result = cli_round(complete_round_1, "--round", "1", "--force", stage)
    assert_one_line_error(
        result, f"invalid choice: '{stage}'", "'attack', 'respond', 'score', 'resample', 'select'"
    )
    assert_unchanged(complete_round_1, before)
    with pytest.raises(StageError) as err:
        run_round(make_config(complete_round_1), 1, force=stage)
    assert_one_line(
        err,
        f"--force {stage} is not a round stage; expected one of: attack, respond, score, resample, select",
    )
    assert_unchanged(complete_round_1, before)


# ---------------------------------------------------------------------------------------------------------
# Seed files (checked in preflight, before the attacker's engine loads)


def _seed_case(tmp_path: Path, content: bytes | None) -> tuple[Path, Path]:
    run_dir = new_store(tmp_path / "run")
    seeds = tmp_path / "seeds.jsonl"
    if content is not None:
        seeds.write_bytes(content)
    return run_dir, seeds


def test_seed_file_missing_via_cli(tmp_path, tiny_models):
    run_dir, seeds = _seed_case(tmp_path, None)
    before = snapshot(run_dir)
    result = cli_round(run_dir, "--round", "1", "--set", f"attacker.seed_file={seeds}")
    assert_one_line_error(result, f"seed file '{seeds}' does not exist; expected a JSONL file")
    assert_unchanged(run_dir, before)


def test_seed_file_not_utf8_via_cli(tmp_path, tiny_models):
    run_dir, seeds = _seed_case(tmp_path, b'{"text": "caf\xe9 au lait", "category": "food"}\n')
    before = snapshot(run_dir)
    result = cli_round(run_dir, "--round", "1", "--set", f"attacker.seed_file={seeds}")
    assert_one_line_error(result, f"seed file '{seeds}' is not UTF-8 (byte 13); expected UTF-8 JSONL")
    assert_unchanged(run_dir, before)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "ring the \\u0007 bell", "category": "x"}\n', "line 1 contains control characters"),
        (b'{"text": "ok prompt"}\n{"text": "nul \\u0000 here"}\n', "line 2 contains control characters"),
        (b'{"text": "ok prompt"}\n{"text": "esc \x1b[31m red"}\n', "line 2 is not JSON"),
        (b'{"text": "   "}\n', "line 1 has no usable 'text'; expected a non-empty string"),
        (b'{"category": "x"}\n', "line 1 has no usable 'text'"),
        (b"\n  \n", "has no prompts; expected at least one JSONL row"),
    ],
    ids=["bell", "nul", "raw-escape-byte", "blank-text", "no-text", "no-rows"],
)
def test_seed_file_with_control_characters_or_no_text(tmp_path, tiny_models, content, message):
    run_dir, seeds = _seed_case(tmp_path, content)
    before = snapshot(run_dir)
    with pytest.raises(InputError) as err:
        run_round(make_config(run_dir, f"attacker.seed_file={seeds}"), 1)
    assert_one_line(err, f"seed file '{seeds}'", message)
    assert_unchanged(run_dir, before)


def test_seed_whitespace_and_tabs_are_normalised_not_refused(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"text": "  two\\tspaces  and\\nlines ", "category": "c"}\n', encoding="utf-8")
    assert [s.text for s in load_seed_file(seeds)] == ["two spaces and lines"]


# ---------------------------------------------------------------------------------------------------------
# Scores and selection on hand-filled stores


@pytest.mark.parametrize("scorer", [NaNScorer, InfScorer, NegInfScorer])
def test_non_finite_rewards_stop_the_score_stage(tmp_path, scorer):
    run_dir = filled(tmp_path / "run", until="respond")
    before = snapshot(run_dir)
    with Store.for_run(run_dir) as s, pytest.raises(StageError) as err:
        score_round(s, 1, scorer(make_config(run_dir)), scorer.__name__)
    bad = {NaNScorer: "nan", InfScorer: "inf", NegInfScorer: "-inf"}[scorer]
    assert_one_line(
        err, f"scorer '{scorer.__name__}' returned 1 non-finite rewards (first: {bad}", "Nothing was"
    )
    assert_unchanged(run_dir, before)


def test_scorer_returning_too_few_rewards(tmp_path):
    run_dir = filled(tmp_path / "run", until="respond")
    before = snapshot(run_dir)
    with Store.for_run(run_dir) as s, pytest.raises(StageError) as err:
        score_round(s, 1, ShortScorer(make_config(run_dir)), "ShortScorer")
    assert_one_line(err, "scorer 'ShortScorer' returned 8 rewards for 9 responses; expected one per response")
    assert_unchanged(run_dir, before)


def test_identical_answers_are_scored_once_and_tie(tmp_path):
    """A batched reward model can give copies of one text rewards that differ in the last bit; a tie it is."""
    run_dir = tmp_path / "run"
    with Store.for_run(run_dir) as s:
        fill_round(s, 1, {"a": [0, 0, 0]}, scorer=SCORER, texts={"a": ["same", "same", "other"]})
        s.reset_from(1, "score")
        seen: list[list[str]] = []

        class Noisy:
            name = SCORER

            def score(self, prompts, responses):
                seen.append(responses)
                return [1.0 + i * 1e-7 for i in range(len(responses))]

            def close(self):
                pass

        score_round(s, 1, Noisy(), SCORER)
        select_round(s, SelectConfig(), 1, SCORER)
        values = dict(s.execute("SELECT response_id, value FROM scores"))
        assert seen == [["same", "other"]] and values["a-0"] == values["a-1"]
        assert s.count("pairs", 1) == 1 and check_store(s) == []


def test_nan_reward_via_cli_with_a_custom_scorer(tmp_path, tiny_models):
    """A custom `reward.kind: package.module:Class`; the round resumes at score, so no engine loads."""
    run_dir = filled(tmp_path / "run", until="respond")
    before = snapshot(run_dir)
    result = cli_round(
        run_dir, "--round", "1", "--set", "reward.kind=tests.reliability.bad_scorers:NaNScorer"
    )
    assert_one_line_error(
        result,
        "scorer 'tests.reliability.bad_scorers:NaNScorer' returned 1 non-finite rewards (first: nan",
        "expected finite",
    )
    assert_unchanged(run_dir, before)


def test_empty_or_whitespace_responses_are_never_chosen(tmp_path):
    rewards = {"a": [9.0, 8.0, 1.0, 0.5], "b": [5.0, 4.0], "c": [3.0, 2.0, 1.0]}
    texts = {
        "a": ["", " \n\t ", "fine answer", "worse answer"],
        "b": ["", "   "],
        "c": ["\u3000", "good", "bad"],
    }
    with Store(tmp_path / "s.duckdb") as s:
        fill_round(s, 1, rewards, scorer=SCORER, texts=texts)
        select_round(s, SelectConfig(), 1, SCORER)
        pairs = {r["prompt_id"]: (r["chosen_id"], r["rejected_id"]) for r in s.rows("SELECT * FROM pairs")}
        chosen_texts = s.execute("SELECT r.text FROM pairs p JOIN responses r ON r.response_id = p.chosen_id")
        assert check_store(s) == []
    assert pairs == {"a": ("a-2", "a-3"), "c": ("c-1", "c-2")}  # b has only empty answers: no pair
    assert all(t[0].strip() for t in chosen_texts)


def test_identical_responses_give_zero_pairs_and_the_round_says_so_via_cli(tmp_path, tiny_models):
    rewards = {"a": [0.25] * 4, "b": [-1.5] * 4}
    texts = {"a": ["same answer"] * 4, "b": ["other"] * 4}
    run_dir = tmp_path / "run"
    with Store.for_run(run_dir) as s:
        s.begin_round(1, "attacker", "defender", SCORER, "{}")
        fill_round(s, 1, rewards, scorer=SCORER, texts=texts)
    result = cli_round(run_dir, "--round", "1")  # only resample (off) and select are left: no engine loads
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 1: 0 pairs" in result.stderr and "Traceback" not in result.stderr
    assert [line.split() for line in result.stdout.splitlines() if line.strip().startswith("pairs ")] == [
        ["pairs", "0"]
    ]
    with Store.for_run(run_dir, read_only=True) as s:
        assert s.stage_done(1, "select") and s.count("pairs", 1) == 0
        assert json.loads(s.scalar("SELECT details FROM stage_log WHERE stage = 'select'"))["pairs"] == 0
        assert check_store(s) == []


# ---------------------------------------------------------------------------------------------------------
# The store: schema version, locks, unwritable places, a full disk


def test_store_from_a_newer_schema_version_via_cli(complete_round_1):
    with Store.for_run(complete_round_1) as s:
        s.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = _raw_snapshot(complete_round_1)
    result = cli_round(complete_round_1, "--round", "2")
    assert_one_line_error(result, "has schema version 99, newer than this Sparring's 1", "upgrade Sparring")
    result = run_cli("data.check", "--run", str(complete_round_1))
    assert_one_line_error(result, "has schema version 99")
    assert _raw_snapshot(complete_round_1) == before


def _raw_snapshot(run_dir: Path) -> dict[str, list[tuple]]:
    """Like `snapshot`, with plain DuckDB: `Store` itself refuses a newer schema."""
    import duckdb

    con = duckdb.connect(str(store_path(run_dir)), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in sorted(tables)}
    finally:
        con.close()


@pytest.fixture
def holder(complete_round_1):
    """Another process holding the store open for writing (as a running round does)."""
    code = f"from data.store import Store; s = Store.for_run({str(complete_round_1)!r}); print('ready', flush=True); input()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    if proc.poll() is None:
        proc.communicate("\n", timeout=60)


def test_second_writer_names_the_holder_via_cli(complete_round_1, holder):
    result = cli_round(complete_round_1, "--round", "2")
    assert_one_line_error(result, f"is open for writing by process {holder.pid}", "wait for it to finish")
    holder.communicate("\n", timeout=60)
    with Store.for_run(complete_round_1, read_only=True) as s:
        assert s.done_stages(1) == set(STAGES_1) and not s.done_stages(2) and check_store(s) == []


def test_reader_while_a_writer_holds_the_store(complete_round_1, holder):
    """DuckDB lets no other process in, not even to read, while one has the file open for writing."""
    result = run_cli("data.check", "--run", str(complete_round_1))
    assert_one_line_error(result, f"is open for writing by process {holder.pid}")
    with pytest.raises(StoreError) as err:
        Store.for_run(complete_round_1, read_only=True)
    assert_one_line(
        err, f"run store '{store_path(complete_round_1)}' is open for writing by process {holder.pid}"
    )


def test_run_dir_under_a_file_is_a_clear_error(tmp_path):
    """An honest unwritable run dir even as root (which ignores permission bits): a path under a file."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreError) as err:
        run_round(make_config(blocker / "run"), 1)
    assert_one_line(err, f"cannot open run store '{blocker / 'run' / 'sparring.duckdb'}'")
    assert blocker.read_text() == "x"


def test_read_only_run_dir(tmp_path):
    """Permission bits only bind non-root users; as root the path-under-a-file case above covers it."""
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions; see test_run_dir_under_a_file_is_a_clear_error")
    run_dir = filled(tmp_path / "run")
    before = snapshot(run_dir)
    run_dir.chmod(0o500)
    try:
        result = cli_round(run_dir, "--round", "2")
        assert_one_line_error(result, "run store")
    finally:
        run_dir.chmod(0o700)
    assert_unchanged(run_dir, before)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_during_a_stage_via_cli(tmp_path, tiny_models):
    """A real ENOSPC: DuckDB's write-ahead log points at /dev/full, so the select stage cannot commit."""
    run_dir = filled(tmp_path / "run", until="score")
    before = snapshot(run_dir)
    wal = Path(f"{store_path(run_dir)}.wal")
    wal.symlink_to("/dev/full")
    try:
        result = cli_round(run_dir, "--round", "1")
    finally:
        wal.unlink()
    assert_one_line_error(result, "No space left on device", "nothing of this step was stored", "re-run")
    assert_unchanged(run_dir, before)


# ---------------------------------------------------------------------------------------------------------
# With the real defender: one vLLM load for all of these


LONG = " ".join(f"word{i} and more words number {i}" for i in range(400))  # thousands of tokens
SHORT = ["Tell me about rivers.", "How do magnets work?", "Write a haiku about rain."]


@pytest.fixture(scope="module")
def real_round(tmp_path_factory, tiny_models):
    """Round 1 with hand-written prompts (one far longer than max_model_len), played by the real defender
    with top_p so small that sampling is effectively greedy: every prompt's n responses are identical."""
    run_dir = tmp_path_factory.mktemp("real") / "run"
    prompts = [
        PromptRecord(f"p{i}", 1, i, text, "c", None, "gpo", f"write like {i}")
        for i, text in enumerate([*SHORT, LONG])
    ]
    with Store.for_run(run_dir) as s, s.stage(1, "attack") as result:
        result.rows = s.insert("prompts", to_arrow(prompts, PromptRecord))
    result = cli_round(
        run_dir,
        "--round", "1",
        "--set", "defender.n=3", "--set", "defender.max_tokens=12", "--set", "defender.top_p=1e-9",
    )  # fmt: skip
    return run_dir, result


@pytest.mark.slow
def test_prompt_longer_than_context_is_dropped_and_counted(real_round):
    run_dir, result = real_round
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 prompts longer than the defender's context were dropped" in result.stderr
    with Store.for_run(run_dir, read_only=True) as s:
        details = json.loads(s.scalar("SELECT details FROM stage_log WHERE round = 1 AND stage = 'respond'"))
        assert details["too_long"] == 1
        per_prompt = dict(s.execute("SELECT prompt_id, count(*) FROM responses GROUP BY 1"))
        assert per_prompt == {f"p{i}": 3 for i in range(len(SHORT))}
        assert s.done_stages(1) == set(STAGES_1)
        assert check_store(s) == []


@pytest.mark.slow
def test_identical_real_responses_give_zero_pairs(real_round):
    run_dir, result = real_round
    assert result.returncode == 0, result.stderr[-3000:]
    with Store.for_run(run_dir, read_only=True) as s:
        distinct = s.execute("SELECT prompt_id, count(DISTINCT text) FROM responses GROUP BY 1")
        assert all(n == 1 for _, n in distinct), distinct
        spread = s.execute(
            "SELECT max(value) - min(value) FROM scores JOIN responses USING (response_id) GROUP BY prompt_id"
        )
        assert all(math.isclose(d[0], 0.0, abs_tol=0.0) for d in spread), spread
        assert s.count("pairs", 1) == 0 and s.count("hard_prompts", 1) > 0
    assert "round 1: 0 pairs" in result.stderr


@pytest.mark.parametrize("value", ["x", "-1", ",", "nan"])
def test_bad_ablation_lambdas_fail_before_any_arm_runs(tmp_path, value):
    """`--ablate-diversity` is parsed before hours of arms; the run dir stays untouched."""
    config = REPO / "toy" / "configs" / "toy.yaml"
    result = run_cli("toy.experiment", "--config", str(config), "--set", f"run.dir={tmp_path / 'toy'}",
                     "--ablate-diversity", value)  # fmt: skip
    assert_one_line_error(result, f"--ablate-diversity '{value}'", "expected comma-separated numbers >= 0")
    assert not (tmp_path / "toy").exists()
