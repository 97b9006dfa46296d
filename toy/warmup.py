"""`python -m toy.warmup --world toy/configs/toy_world.yaml --out runs/toy/warmup`: teach a tiny model the world.

The game needs players that speak the toy world's language before it starts. Warm-up builds a fresh tiny
Qwen2 (`core.tiny_models`, with a BPE tokenizer trained on the world's training text only) and fine-tunes all
of its weights, a few hundred steps on CPU, on two tasks at once, so one checkpoint plays both roles:
- defender: a training prompt of category c -> a refusal with probability `warmup_refusal` of c, else help.
  The file sets these so the starting defender is good on some unsafe categories and bad on others, and
  stochastic enough that its N samples disagree (DPO needs pairs that differ);
- attacker: the exact instructions `generate.attack` sends (GPO's and eva's templates) with a parent prompt ->
  a prompt of the parent's category with probability `attacker_same_category`, else of any category. The
  reward-weighted step then has room to move the attacker toward the categories where the defender fails.
It also writes the prompt sets the experiment uses: `seeds.jsonl` (round 1's parents), `static.jsonl` (the
static-prompt baseline) and `heldout.jsonl` (held-out templates and subjects, never trained on).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

from generate.attack import EVA_TEMPLATES, GPO_TEMPLATE
from toy.world import World, load_world

log = logging.getLogger(__name__)

WARMUP_VERSION = 1  # bump when the recipe changes, so cached warm-ups rebuild
HELDOUT_PER_CATEGORY = 12


def answer(world: World, prompt: str, refuse: bool, rng: random.Random) -> str:
    """A world-style answer to one of the world's prompts: a refusal or help, naming the request's subject."""
    c = world.category(world.classify(prompt))
    subject = next((s for s in (c.subjects + c.heldout_subjects if c else ()) if s in prompt), "do that")
    template = rng.choice(world.refusal_templates if refuse else world.help_templates)
    return template.format(subject=subject)


def defender_examples(world: World, count: int, rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for _ in range(count):
        c = rng.choice(world.categories)
        prompt = rng.choice(world.train_prompts(c))
        rows.append((prompt, answer(world, prompt, rng.random() < c.warmup_refusal, rng)))
    return rows


def attacker_examples(world: World, count: int, rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for _ in range(count):
        parent_cat = rng.choice(world.categories)
        parent = rng.choice(world.train_prompts(parent_cat))
        template = rng.choice((GPO_TEMPLATE, GPO_TEMPLATE, *EVA_TEMPLATES))
        instruction = template.format(text=parent, category=parent_cat.name)
        same = rng.random() < world.warmup.attacker_same_category
        target_cat = parent_cat if same else rng.choice(world.categories)
        choices = [p for p in world.train_prompts(target_cat) if p != parent]
        rows.append((instruction, rng.choice(choices)))
    return rows


def corpus(world: World) -> list[str]:
    """The tokenizer's training text: everything warm-up trains on (never the held-out prompts)."""
    rng = random.Random(0)
    texts = [p for c in world.categories for p in world.train_prompts(c)]
    texts += [answer(world, p, r, rng) for p in texts for r in (True, False)]
    texts += [
        t.format(text="", category=c.name) for t in (GPO_TEMPLATE, *EVA_TEMPLATES) for c in world.categories
    ]
    return texts * 2


def warmup(world_path: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Build and fine-tune the world's tiny policy under `out/policy` (cached); returns that path."""
    world = load_world(world_path)
    out = Path(out)
    stamp = out / "WARMUP.json"
    key = {"version": WARMUP_VERSION, "seed": seed, "world": Path(world_path).read_text(encoding="utf-8")}
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return out / "policy"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    from core.tiny_models import build_tiny_models

    started = time.perf_counter()
    base = build_tiny_models(out / "base", seed, corpus=corpus(world))["policy"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    spec = world.warmup
    rng = random.Random(seed)
    rows = defender_examples(world, spec.defender_examples, rng) + attacker_examples(
        world, spec.attacker_examples, rng
    )
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    encoded = []
    for prompt, completion in rows:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        comp = tokenizer(completion, add_special_tokens=False)["input_ids"] + [end]
        encoded.append((ids, comp))
    pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")  # right padding
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / spec.steps))
    )
    model.train()
    order: list[int] = []
    for step in range(spec.steps):
        if len(order) < spec.batch_size:
            order += rng.sample(range(len(encoded)), len(encoded))
        batch, order = [encoded[i] for i in order[: spec.batch_size]], order[spec.batch_size :]
        padded = pad([{"input_ids": p + c, "labels": [-100] * len(p) + c} for p, c in batch])
        loss = model(**padded).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0 or step == spec.steps - 1:
            log.info("warm-up step %d/%d loss %.4f", step + 1, spec.steps, loss.item())
    model.eval()
    model.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    _write_sets(world, out, seed)
    stamp.write_text(
        json.dumps(
            {"key": key, "loss": loss.item(), "seconds": time.perf_counter() - started, "spec": asdict(spec)}
        )
    )
    log.info("warm-up done in %.0fs: %s", time.perf_counter() - started, out / "policy")
    return out / "policy"


def _write_sets(world: World, out: Path, seed: int) -> None:
    """seeds.jsonl (round 1), static.jsonl (the static baseline's prompts), heldout.jsonl (evaluation)."""
    spec = world.warmup
    sets = {
        "seeds.jsonl": world.train_set(spec.seeds_per_category * len(world.categories), seed + 1),
        "static.jsonl": world.train_set(spec.static_prompts, seed + 2),
        "heldout.jsonl": world.heldout_set(HELDOUT_PER_CATEGORY, seed + 3),
    }
    for name, rows in sets.items():
        lines = [json.dumps({"text": text, "category": cat}) for cat, text in rows]
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    from core.cli import main_guard, setup_logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="toy/configs/toy_world.yaml", help="category file")
    p.add_argument("--out", default="runs/toy/warmup")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    print(main_guard(lambda: warmup(args.world, args.out, args.seed)))


if __name__ == "__main__":
    main()
