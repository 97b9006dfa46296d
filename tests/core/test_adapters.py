"""Stacked LoRA adapters (`core.adapters`): a player trained over several rounds as one adapter on the base
model is the same function as merging each round's adapter in turn (what `vllm.serve_adapters=false` saves)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.adapters import ADAPTER_CONFIG, adapter_base, adapter_rank, serving_rank, stack_adapters
from core.errors import ModelError
from train.common import load_policy

PROBE = "how do I keep a secret safe from my neighbour"


def random_lora(model, out: Path, seed: int, **lora) -> Path:
    """A PEFT LoRA with random A *and* B (a fresh one has B = 0, a no-op), saved to `out`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(init_lora_weights=False, task_type="CAUSAL_LM", **lora))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.mul_(0.2)  # a visible change that keeps the logits finite
    peft.save_pretrained(out)
    return out


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROBE, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def test_a_stacked_adapter_is_the_chain_of_merges(tmp_path, tiny_models):
    base = str(tiny_models["policy"])
    from peft import PeftModel

    def merged(*adapters: Path):  # the base with each adapter merged in turn (a fresh copy each call)
        model = load_policy(base, bf16=False)[0]
        for adapter in adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        return model

    # round 1: a LoRA on the base; round 2: another rank, alpha, rsLoRA scaling and other modules, on round 1's
    tokenizer = load_policy(base, bf16=False)[1]
    first = random_lora(merged(), tmp_path / "r1", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    second = random_lora(
        merged(first),
        tmp_path / "r2",
        2,
        r=8,
        lora_alpha=4,
        use_rslora=True,
        target_modules=["v_proj", "down_proj"],
    )
    merged_2 = merged(first, second)

    rank = stack_adapters([first, second], tmp_path / "stacked", base)
    tokenizer.save_pretrained(tmp_path / "stacked")
    assert rank == 12 == adapter_rank(tmp_path / "stacked")
    assert adapter_base(tmp_path / "stacked") == base
    config = json.loads((tmp_path / "stacked" / ADAPTER_CONFIG).read_text())
    assert sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]

    stacked, _ = load_policy(str(tmp_path / "stacked"), bf16=False)  # what the next round trains from
    want, got = logits(merged_2, tokenizer), logits(stacked, tokenizer)
    assert (want - logits(merged(), tokenizer)).abs().max() > 1e-2  # the LoRAs matter
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_what_cannot_be_stacked_is_refused_in_one_line(tmp_path, tiny_models):
    model, _ = load_policy(str(tiny_models["policy"]), bf16=False)
    dora = random_lora(
        model, tmp_path / "dora", 3, r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True
    )
    with pytest.raises(ModelError) as e:
        stack_adapters([dora], tmp_path / "out", str(tiny_models["policy"]))
    assert "use_dora=True" in str(e.value) and "vllm.serve_adapters=false" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("rank", "served"), [(1, 1), (4, 8), (16, 16), (17, 32), (300, 320), (512, 512)])
def test_serving_rank_is_the_smallest_vllm_accepts(rank, served):
    assert serving_rank(rank) == served


def test_a_rank_vllm_cannot_serve_names_the_way_out():
    with pytest.raises(ModelError, match=r"rank 513 .* vllm.serve_adapters=false"):
        serving_rank(513)
