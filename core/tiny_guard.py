"""`tiny:guard`: a tiny guard classifier, trained here in seconds, so `reward.kind: guard` runs with no download.

A Llama-Guard-shaped model at the tiny policy's size (`Qwen2ForCausalLM`, the shared tiny tokenizer plus the
label words `safe` / `unsafe` as single tokens): its chat template turns a (user, assistant) conversation into
the question "is the agent's answer safe?", and it answers with one label token. It is trained on labelled
conversations built from the toy world's categories (`toy/configs/toy_world.yaml`, read as data: each training
subject × prompt template × refusal or help answer; an answer is unsafe when it helps with an unsafe kind) and
from the default seed prompts (harmful categories vs `benign`, with a refusal or a help answer). Held-out
subjects and templates are never trained on, so tests can check it generalises.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUILD_VERSION = 1
LABELS = ("safe", "unsafe")
TEMPLATE = (
    "{{ '<|im_start|>user\nIs the agent safe? ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + ' ' }}"
    "{% else %}{{ 'Agent: ' + message['content'] + ' ' }}{% endif %}"
    "{% endfor %}"
    "{{ '<|im_end|>\n<|im_start|>assistant\n' }}"
)
REPO = Path(__file__).resolve().parents[1]
TOY_WORLD = REPO / "toy" / "configs" / "toy_world.yaml"
SEEDS = REPO / "data" / "seeds.jsonl"
REFUSALS = [
    "I cannot help with that request because it could cause harm.",
    "Sorry, I will not help with that.",
]
HELP = [
    "Sure, here are the steps you asked for. First, second, third.",
    "Sure, here is how: first plan, then act.",
]


def examples() -> list[tuple[str, str, str]]:
    """(prompt, response, label) triples: unsafe when the answer helps with a harmful request."""
    import yaml

    world = yaml.safe_load(TOY_WORLD.read_text(encoding="utf-8"))
    out = []
    for cat in world["categories"]:
        harmful = cat["kind"] == "unsafe"
        for subject in cat["subjects"]:
            for template in world["templates"]:
                prompt = template.format(subject=subject)
                for answer in world["refusal_templates"]:
                    out.append((prompt, answer.format(subject=subject), "safe"))
                for answer in world["help_templates"]:
                    out.append((prompt, answer.format(subject=subject), "unsafe" if harmful else "safe"))
    for line in SEEDS.read_text(encoding="utf-8").splitlines():
        seed = json.loads(line)
        harmful = seed["category"] != "benign"
        out += [(seed["text"], r, "safe") for r in REFUSALS]
        out += [(seed["text"], h, "unsafe" if harmful else "safe") for h in HELP]
    return out


def build_tiny_guard(out: str | Path, seed: int = 0, steps: int = 300) -> Path:
    """Build (or reuse) `out/seed-<seed>/guard`."""
    path = Path(out) / f"seed-{seed}" / "guard"
    stamp = path / "BUILT.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION:
        return path
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from core.tiny_models import POLICY_SHAPE, build_tiny_models

    log.info("building and training the tiny guard in %s (seed %d)", path, seed)
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_models(out, seed)["policy"])
    tokenizer.add_tokens(list(LABELS))
    tokenizer.chat_template = TEMPLATE
    config = Qwen2Config(
        vocab_size=(len(tokenizer) + 63) // 64 * 64,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        **POLICY_SHAPE,
    )
    torch.manual_seed(seed + 3)
    model = Qwen2ForCausalLM(config)
    _train(model, tokenizer, examples(), steps, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    stamp.write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
    return path


def _train(model: Any, tokenizer: Any, data: list[tuple[str, str, str]], steps: int, seed: int) -> None:
    """Cross-entropy on the label token only, given the rendered conversation (what the scorer reads)."""
    import torch

    label_id = {label: tokenizer.convert_tokens_to_ids(label) for label in LABELS}
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
        )
        for p, r, _ in data
    ]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rows = [(ids, label_id[label]) for ids, (_, _, label) in zip(encoded, data, strict=True)]
    rng = random.Random(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(rows, 32)
        padded = tokenizer.pad(
            {"input_ids": [ids for ids, _ in batch]}, padding_side="right", return_tensors="pt"
        )
        logits = model(**padded).logits
        last = padded["attention_mask"].sum(dim=1) - 1
        loss = torch.nn.functional.cross_entropy(
            logits[torch.arange(len(batch)), last], torch.tensor([y for _, y in batch])
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    log.info("tiny guard trained: final batch loss %.3f", float(loss))
