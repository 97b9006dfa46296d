"""A trained player served as a LoRA adapter by vLLM is the merged model: the log-prob of every prompt token
under vLLM (base engine + `LoRARequest`, the real `generate.engine` path) equals the merged model's under
transformers within 1e-4 (fp32 on CPU; measured differences are ~1e-6). The adapter is a stacked one of two
rounds with different ranks, scalings and modules, so the stacking is checked end to end too; the base model and
the adapter come from one engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.adapters import stack_adapters
from tests.conftest import REPO
from tests.core.test_adapters import random_lora
from train.common import load_policy

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4


def hf_logprobs(model, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def test_vllm_serves_a_stacked_adapter_as_the_merged_model(tmp_path, tiny_models):
    from peft import PeftModel

    base = str(tiny_models["policy"])
    first = random_lora(load_policy(base, False)[0], tmp_path / "r1", 1, r=4, lora_alpha=8,
                        target_modules=["q_proj", "v_proj", "o_proj"])  # fmt: skip
    merged_1 = PeftModel.from_pretrained(load_policy(base, False)[0], first).merge_and_unload()
    second = random_lora(merged_1, tmp_path / "r2", 2, r=8, lora_alpha=16,
                         target_modules=["v_proj", "gate_proj", "down_proj"])  # fmt: skip
    stacked = tmp_path / "stacked"
    stack_adapters([first, second], stacked, base)
    load_policy(base, False)[1].save_pretrained(stacked)

    out = tmp_path / "served.json"
    probe = subprocess.run(
        [sys.executable, "-m", "tests.generate.lora_probe", str(out), base, str(stacked)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    served = json.loads(out.read_text())
    assert served["starts"] == 1  # base and adapter from one engine

    fresh = load_policy(base, False)[0]
    merged = PeftModel.from_pretrained(load_policy(base, False)[0], first).merge_and_unload()
    merged = PeftModel.from_pretrained(merged, second).merge_and_unload()
    worst, moved = 0.0, 0.0
    for model, key in ((fresh, base), (merged, str(stacked))):
        for row in served[key]:
            want = hf_logprobs(model, row["ids"])
            worst = max(worst, max(abs(a - b) for a, b in zip(row["logprobs"], want, strict=True)))
    for b, s in zip(served[base], served[str(stacked)], strict=True):
        moved = max(moved, max(abs(x - y) for x, y in zip(b["logprobs"], s["logprobs"], strict=True)))
    assert moved > 0.05, "the adapter changed nothing: vLLM may have served the base model"
    print(f"largest |vLLM - merged| log-prob difference: {worst:.2e}")
    assert worst < TOLERANCE, worst
