"""Export (DuckDB -> Arrow -> datasets) and `--to-dir`: the folder loads back with `datasets.load_dataset` into
the same rows the store holds, and trains TRL's DPOTrainer unchanged. The store is filled by hand (no vLLM).
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import datasets
import pyarrow as pa
import pytest
from huggingface_hub import DatasetCard

from core.config import SparringConfig
from core.errors import ConfigError, StageError
from data import sql
from data.card import configs_metadata
from data.export import ATTACKER_SFT, CONFIGS, DEFENDER_DPO, FEATURES, RESPONSES, export_round
from data.push import push_round
from data.records import PromptRecord, ResponseRecord, ScoreRecord, to_arrow
from data.select import select_round
from data.store import Store
from tests.conftest import REPO, make_config, run_cli
from tests.data.storefill import fill_round

SCORER = "reward_model:tiny-reward"
ATTACKER, DEFENDER = "runs/x/models/attacker-0", "runs/x/models/defender-0"
# prompt -> rewards of its responses; "tie" has all-equal rewards so it yields no pair
ROUND_REWARDS = {
    1: {"p1": [0.5, -1.0, 2.0], "p2": [0.1, 0.3, -0.2], "tie": [0.4, 0.4, 0.4], "rep": [1.0, -2.0, 0.0]},
    2: {"q1": [-0.5, 0.25, 1.5], "q2": [3.0, 1.0, 2.0], "rep": [0.0, 0.5, -0.5]},
}
# Text with what breaks naive exports: quotes, newlines, non-ASCII, a JSON-looking body.
TRICKY = 'Say "hi"\nthen {"role": "x"} — ünïcödé ✓'


def build_run(run_dir: Path, rounds: tuple[int, ...] = (1, 2), complete: bool = True) -> SparringConfig:
    """A run store with `rounds` played by hand: seeds, attacker prompts (one replayed), 3 responses each,
    scores, real SQL selection; round 1 also has attacker rewards and trained models, round 2 has not."""
    cfg = make_config(run_dir, "hub.license=cc-by-4.0")
    with Store.for_run(run_dir) as store:
        with store.stage(0, "attack"):
            seeds = [PromptRecord(f"s{i}", 0, i, f"seed {i}", "harm", None, "seed") for i in range(2)]
            store.insert("prompts", to_arrow(seeds, PromptRecord))
        for r in rounds:
            store.begin_round(r, f"{ATTACKER}-r{r}", f"{DEFENDER}-r{r}", SCORER, cfg.to_json())
            rewards = {f"{pid}-r{r}": v for pid, v in ROUND_REWARDS[r].items()}
            prompts = [
                PromptRecord(
                    pid,
                    r,
                    i,
                    f"prompt {pid}: {TRICKY}",
                    "harm",
                    "s0",
                    "replay" if pid.startswith("rep") else "gpo",
                    None if pid.startswith("rep") else f"instruction for {pid}",
                    None if pid.startswith("rep") else f"{ATTACKER}-r{r}",
                    json.dumps({"temperature": 0.8}),
                )
                for i, pid in enumerate(rewards)
            ]
            responses, scores = [], []
            for pid, values in rewards.items():
                for j, value in enumerate(values):
                    rid = f"{pid}-{j}"
                    responses.append(
                        ResponseRecord(
                            rid, pid, r, j, f"answer {j} to {pid}\n{TRICKY}", "stop", 7, 9, DEFENDER
                        )
                    )
                    scores.append(ScoreRecord(rid, SCORER, r, value))
                    scores.append(ScoreRecord(rid, "other-judge", r, -value))  # a second scorer: not exported
            with store.stage(r, "attack"):
                store.insert("prompts", to_arrow(prompts, PromptRecord))
            with store.stage(r, "respond"):
                store.insert("responses", to_arrow(responses, ResponseRecord))
            with store.stage(r, "score"):
                store.insert("scores", to_arrow(scores, ScoreRecord))
            if complete or r != rounds[-1]:
                select_round(store, cfg.select, r, SCORER)
        if complete and 1 in rounds:
            attacker_rewards = pa.table(
                {
                    "round": [1, 1],
                    "prompt_id": ["p1-r1", "p2-r1"],
                    "failure": [0.75, 0.25],
                    "diversity": [0.5, 0.125],
                    "reward": [1.25, 0.375],
                    "weight": [1.5, 0.5],
                }
            )
            models = pa.table(
                {
                    "round": [1, 1],
                    "role": ["defender", "attacker"],
                    "path": ["runs/x/models/defender-1", "runs/x/models/attacker-1"],
                    "adapter_path": [None, None],
                    "parent": [DEFENDER, ATTACKER],
                    "details": ["{}", "{}"],
                }
            )
            with store.stage(1, "train_defender"):
                store.insert("models", models.slice(0, 1))
            with store.stage(1, "train_attacker"):
                store.insert("attacker_rewards", attacker_rewards)
                store.insert("models", models.slice(1, 1))
    return cfg


def store_rows(cfg: SparringConfig, query: str, round_: int) -> list[dict]:
    with Store.for_run(cfg.run.dir, read_only=True) as store:
        return store.rows(query, [round_])


@pytest.fixture
def run(tmp_path: Path) -> SparringConfig:
    return build_run(tmp_path / "run")


# ---- export -----------------------------------------------------------------------------------------------


def test_export_has_declared_features_and_store_pairs(run: SparringConfig) -> None:
    with Store.for_run(run.run.dir, read_only=True) as store:
        exported = export_round(store, 1)
    assert set(exported) == set(CONFIGS)
    for config, ds in exported.items():
        assert ds.features == FEATURES[config]
        assert ds.split == "round_1"
    pairs = store_rows(run, sql.ROUND_PAIRS, 1)  # the store's own view of the pairs
    assert [p["prompt_id"] for p in pairs] == ["p1-r1", "p2-r1", "rep-r1"]  # "tie" has no pair
    dpo = exported[DEFENDER_DPO]
    assert dpo["prompt_id"] == [p["prompt_id"] for p in pairs]
    assert dpo["prompt"] == [[{"role": "user", "content": p["prompt"]}] for p in pairs]
    assert dpo["chosen"] == [[{"role": "assistant", "content": p["chosen"]}] for p in pairs]
    assert dpo["rejected"] == [[{"role": "assistant", "content": p["rejected"]}] for p in pairs]
    assert dpo["margin"] == pytest.approx([p["margin"] for p in pairs])
    assert dpo[0]["chosen_reward"] == 2.0 and dpo[0]["rejected_reward"] == -1.0


def test_attacker_sft_rewards_null_until_the_attacker_trains(run: SparringConfig) -> None:
    with Store.for_run(run.run.dir, read_only=True) as store:
        r1, r2 = export_round(store, 1)[ATTACKER_SFT], export_round(store, 2)[ATTACKER_SFT]
    # only prompts the attacker wrote (with an instruction); the replayed one is not attacker data
    assert r1["prompt_id"] == ["p1-r1", "p2-r1", "tie-r1"]
    assert r1["reward"] == [1.25, 0.375, None] and r1["weight"] == [1.5, 0.5, None]
    assert r1[0]["messages"] == [
        {"role": "user", "content": "instruction for p1-r1"},
        {"role": "assistant", "content": f"prompt p1-r1: {TRICKY}"},
    ]
    assert r2["prompt_id"] == ["q1-r2", "q2-r2"]
    assert r2["reward"] == [None, None] and r2["weight"] == [None, None]
    assert r2.features == r1.features  # same schema with or without rewards: splits of one config merge


def test_responses_are_every_response_under_the_round_scorer(run: SparringConfig) -> None:
    with Store.for_run(run.run.dir, read_only=True) as store:
        responses = export_round(store, 1)[RESPONSES]
    assert len(responses) == 12  # 4 prompts x 3 samples, the second scorer's rows not duplicated
    assert set(responses["scorer"]) == {SCORER}
    first = responses[0]
    assert first["prompt_id"] == "p1-r1" and first["sample_index"] == 0 and first["reward"] == 0.5
    assert first["response"] == f"answer 0 to p1-r1\n{TRICKY}"
    assert first["defender_model"] == DEFENDER and first["attacker_model"] == f"{ATTACKER}-r1"


def build_wide_round(run_dir: Path, prompts: int) -> None:
    """One complete round of `prompts` prompts x 2 responses, inserted as whole Arrow columns."""
    cfg = make_config(run_dir)
    ids = [f"w{i}" for i in range(prompts)]
    rids = [f"{p}-{j}" for p in ids for j in range(2)]
    with Store.for_run(run_dir) as store:
        store.begin_round(1, ATTACKER, DEFENDER, SCORER, cfg.to_json())
        with store.stage(1, "attack"):
            store.insert(
                "prompts",
                pa.table(
                    {
                        "prompt_id": ids,
                        "round": [1] * prompts,
                        "idx": list(range(prompts)),
                        "text": [f"prompt {p}" for p in ids],
                        "mode": ["gpo"] * prompts,
                        "instruction": [f"instruction {p}" for p in ids],
                    }
                ),
            )
        with store.stage(1, "respond"):
            store.insert(
                "responses",
                pa.table(
                    {
                        "response_id": rids,
                        "prompt_id": [r[:-2] for r in rids],
                        "round": [1] * len(rids),
                        "sample_index": [int(r[-1]) for r in rids],
                        "text": [f"answer {r}" for r in rids],
                        "defender_model": [DEFENDER] * len(rids),
                    }
                ),
            )
        with store.stage(1, "score"):
            store.insert(
                "scores",
                pa.table(
                    {
                        "response_id": rids,
                        "scorer": [SCORER] * len(rids),
                        "round": [1] * len(rids),
                        "value": [float(r[-1]) for r in rids],
                    }
                ),
            )
        select_round(store, cfg.select, 1, SCORER)


def python_lines_to_export(run_dir: Path) -> tuple[int, dict[str, int]]:
    """Python source lines executed (in every module: ours, datasets, pyarrow's Python layer) by one export."""
    import sys

    with Store.for_run(run_dir, read_only=True) as store:
        export_round(store, 1)  # first call imports and caches; count a steady-state export
        lines = 0

        def tracer(frame, event, arg):  # noqa: ANN001, ANN202 - sys.settrace's protocol
            nonlocal lines
            if event == "line":
                lines += 1
            return tracer

        sys.settrace(tracer)
        try:
            exported = export_round(store, 1)
        finally:
            sys.settrace(None)
    return lines, {config: len(ds) for config, ds in exported.items()}


def test_export_runs_no_python_per_row(tmp_path: Path) -> None:
    """DuckDB -> Arrow -> Dataset with no Python row loop: 500x the rows executes (about) the same Python."""
    build_wide_round(tmp_path / "small", 4)
    build_wide_round(tmp_path / "large", 2000)
    small, small_rows = python_lines_to_export(tmp_path / "small")
    large, large_rows = python_lines_to_export(tmp_path / "large")
    assert large_rows == {DEFENDER_DPO: 2000, ATTACKER_SFT: 2000, RESPONSES: 4000}
    assert small_rows == {DEFENDER_DPO: 4, ATTACKER_SFT: 4, RESPONSES: 8}
    # a loop over rows would execute at least one line per row: >= 8000 more lines for 7,986 more rows
    assert large - small < 1000, (small, large)


# ---- --to-dir ---------------------------------------------------------------------------------------------


def test_to_dir_loads_back_the_store_rows(
    run: SparringConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "export"
    with caplog.at_level(logging.WARNING, logger="data.push"):
        result = push_round(run, 1, "org/sparring", to_dir=out)
        assert result.rows == {DEFENDER_DPO: 3, ATTACKER_SFT: 3, RESPONSES: 12}
        assert not caplog.records
        push_round(run, 2, "org/sparring", to_dir=out)  # a second round joins the first
    # round 2's attacker is not trained: its attacker_sft split is published with null rewards, and said so
    assert [r.getMessage() for r in caplog.records] == [
        "round 2's attacker has not been trained yet: attacker_sft round_2 has null reward and weight; "
        "run `python -m train.attacker --round 2` and push again to fill them"
    ]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md"] + [
        f"{config}/round_{r}-00000-of-00001.parquet" for config in sorted(CONFIGS) for r in (1, 2)
    ]
    for r in (1, 2):
        pairs = store_rows(run, sql.ROUND_PAIRS, r)
        dpo = datasets.load_dataset(str(out), DEFENDER_DPO, split=f"round_{r}")
        assert [
            (row["prompt"][0]["content"], row["chosen"][0]["content"], row["rejected"][0]["content"])
            for row in dpo
        ] == [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
        assert dpo["chosen_reward"] == [p["chosen_reward"] for p in pairs]
        with Store.for_run(run.run.dir, read_only=True) as store:
            exported = export_round(store, r)
        for config in CONFIGS:
            loaded = datasets.load_dataset(str(out), config, split=f"round_{r}")
            assert loaded.features == FEATURES[config]
            assert loaded.to_list() == exported[config].to_list()
    everything = datasets.load_dataset(str(out), RESPONSES)
    assert sorted(everything) == ["round_1", "round_2"]
    default = datasets.load_dataset(str(out), split="round_1")  # defender_dpo is the default config
    assert default.column_names[:3] == ["prompt", "chosen", "rejected"]


def test_to_dir_card_describes_the_run(run: SparringConfig, tmp_path: Path) -> None:
    out = tmp_path / "export"
    push_round(run, 1, "org/sparring", to_dir=out)
    card = DatasetCard.load(out / "README.md", repo_type="dataset")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["configs"] == configs_metadata({c: ["round_1"] for c in CONFIGS})
    assert {i["config_name"] for i in data["dataset_info"]} == set(CONFIGS)
    text = card.text
    for needle in (
        'load_dataset("org/sparring", "defender_dpo", split="round_1")',
        f"`{ATTACKER}-r1`",  # who played
        "`runs/x/models/defender-1`",  # what was trained on the round, and from what
        f"`{DEFENDER}`",
        f"`{SCORER}`",
        "| 1 | 12 | 0.1583 |",  # responses scored, mean reward
        "| 1 | `gpo` | 0.25 | 0.0 |",  # selection: strategy, hard fraction, margin
        "hard_fraction: 0.25",  # the config itself
        "cc-by-4.0",
    ):
        assert needle in text, needle


def test_to_dir_card_redacts_a_token_found_in_the_config(
    run: SparringConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card quotes each round's config; a token someone put there (vllm.extra is free-form) is blanked."""
    token = "hf_redactMe0123456789"
    leaky = make_config(Path(run.run.dir), f"vllm.extra={{api_key: {token}}}")
    with Store.for_run(run.run.dir) as store:  # round 3 plays with the leaky config
        store.begin_round(3, ATTACKER, DEFENDER, SCORER, leaky.to_json())
        fill_round(store, 3, {"a": [0.0, 1.0]}, scorer=SCORER)
        select_round(store, leaky.select, 3, SCORER)
    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "export"
    push_round(run, 3, to_dir=out)
    text = (out / "README.md").read_text(encoding="utf-8")
    assert token not in text and "api_key: <redacted>" in text


def test_to_dir_repush_replaces_the_round(run: SparringConfig, tmp_path: Path) -> None:
    out = tmp_path / "export"
    push_round(run, 1, to_dir=out)
    push_round(run, 1, to_dir=out)
    assert len(list((out / DEFENDER_DPO).glob("*.parquet"))) == 1
    assert len(datasets.load_dataset(str(out), DEFENDER_DPO, split="round_1")) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or backup left


def test_to_dir_killed_before_the_swap_leaves_the_folder_as_it_was(
    run: SparringConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (core.faults point `push:swap`) after round 2 is fully staged: the export keeps round 1 only,
    byte for byte; the next run clears the staging folder and finishes."""
    out = tmp_path / "export"
    push_round(run, 1, to_dir=out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    cli = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", f"run.dir={run.run.dir}"]
    cli += ["--round", "2", "--to-dir", str(out)]
    monkeypatch.setenv("SPARRING_FAULT", "push:swap")
    killed = run_cli("data.push", *cli, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert len(list(tmp_path.glob(".export.*.partial"))) == 1  # the staged round 2, never swapped in
    monkeypatch.delenv("SPARRING_FAULT")
    done = run_cli("data.push", *cli, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(datasets.load_dataset(str(out), DEFENDER_DPO)) == ["round_1", "round_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]


def test_incomplete_round_is_refused_and_nothing_written(tmp_path: Path) -> None:
    cfg = build_run(tmp_path / "run", rounds=(1, 2), complete=False)
    out = tmp_path / "export"
    with pytest.raises(StageError, match=r"round 2 .* not complete: stage\(s\) select"):
        push_round(cfg, 2, "org/sparring", to_dir=out)
    with pytest.raises(StageError, match="round 3 has not been played"):
        push_round(cfg, 3, "org/sparring", to_dir=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_to_dir_refuses_a_folder_it_did_not_write(run: SparringConfig, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        push_round(run, 1, to_dir=out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]


@pytest.mark.parametrize("repo", ["no-namespace", "a/b/c", "org/bad name", "org/--x", ""])
def test_bad_repo_id_is_a_one_line_config_error(run: SparringConfig, repo: str) -> None:
    with pytest.raises(ConfigError) as e:
        push_round(run, 1, repo or None)
    assert "\n" not in str(e.value)


# ---- the exported pairs train TRL -------------------------------------------------------------------------


def test_to_dir_dataset_trains_dpo_one_step(run: SparringConfig, tmp_path: Path, tiny_models) -> None:
    """The folder `--to-dir` wrote, loaded with `load_dataset`, goes into TRL's DPOTrainer as is: a LoRA on
    the tiny policy, reference = adapter off (`ref_model=None` with `peft_config`), one optimizer step."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = tmp_path / "export"
    push_round(run, 1, to_dir=out)
    pairs = datasets.load_dataset(str(out), DEFENDER_DPO, split="round_1")
    assert len(pairs) == 3
    torch.manual_seed(0)
    policy = tiny_models["policy"]
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=128,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora, "DPOTrainer did not wrap the policy in the LoRA"
    result = trainer.train()
    assert result.global_step == 1
    assert torch.isfinite(torch.tensor(result.training_loss))
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora[n], after[n].detach()) for n in lora)  # the adapter learned
