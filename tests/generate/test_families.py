"""Players and scorer from three model families, as users run them: the attacker a Qwen2 (ChatML), the defender a
Llama (Llama-3 headers, its own vocabulary), the reward model a Mistral classifier (`[INST]`, a third vocabulary).
A full round through the CLI with the real vLLM, then both trainers; each role must be prompted through its own
tokenizer and template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from core.tiny_models import resolve_model
from data.check import check_store
from data.store import Store
from tests.conftest import REPO, TINY_DIR, run_cli

pytestmark = pytest.mark.slow


def test_a_round_and_both_trainers_with_three_families(tmp_path, tiny_models):
    run_dir = tmp_path / "run"
    sets = [
        "--config", str(REPO / "configs" / "demo.yaml"), "--set", f"run.dir={run_dir}",
        "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", "attacker.model=tiny:policy",
        "--set", "defender.model=tiny:policy-llama", "--set", "reward.model=tiny:reward-mistral",
        "--set", "attacker.num_prompts=8", "--set", "attacker.max_tokens=24", "--set", "defender.max_tokens=16",
        "--set", "train_defender.max_steps=2", "--set", "train_attacker.max_steps=2",
    ]  # fmt: skip
    for module in ("generate.round", "train.defender", "train.attacker"):
        result = run_cli(module, "--round", "1", *sets)
        assert result.returncode == 0, (module, result.stderr[-3000:])
    defender = resolve_model("tiny:policy-llama", TINY_DIR)
    llama = AutoTokenizer.from_pretrained(defender)
    qwen = AutoTokenizer.from_pretrained(tiny_models["policy"])
    assert llama.get_vocab() != qwen.get_vocab()
    with Store.for_run(run_dir, read_only=True) as s:
        rows = s.rows(
            "SELECT p.text, r.prompt_tokens, r.defender_model FROM responses r JOIN prompts p USING (prompt_id)"
        )
        assert rows and {r["defender_model"] for r in rows} == {defender}
        for r in rows:  # the defender was prompted through the Llama template, not the attacker's ChatML
            ids = llama.apply_chat_template(
                [{"role": "user", "content": r["text"]}], add_generation_prompt=True
            )
            assert r["prompt_tokens"] == len(ids["input_ids"] if hasattr(ids, "keys") else ids)
        scorers = {r[0] for r in s.execute("SELECT DISTINCT scorer FROM scores")}
        assert scorers == {"tiny:reward-mistral"}
        models = {r["role"]: r for r in s.rows("SELECT role, path, parent FROM models")}
        assert models["defender"]["parent"] == defender
        assert models["attacker"]["parent"] == str(tiny_models["policy"])
        assert check_store(s) == []
    trained = AutoTokenizer.from_pretrained(models["defender"]["path"])
    assert trained.get_vocab() == llama.get_vocab() and trained.chat_template == llama.chat_template
