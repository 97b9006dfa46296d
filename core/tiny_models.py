"""Tiny random-init models of real architectures, built locally so tests and the demo need no downloads.

A model reference `tiny:<name>` in the config resolves to a directory built here on first use and cached
(deterministic from the seed). Anything else is passed untouched to `from_pretrained` / vLLM, so the same
loading code serves Hub ids and local paths on a GPU.

What is built:
- `tiny:policy`: `Qwen2ForCausalLM`, hidden 128, 2 heads of dim 64 (vLLM's CPU attention rejects dim 16).
- `tiny:reward`: `Qwen2ForSequenceClassification` with one label (a reward model).
  Both share a byte-level BPE tokenizer trained with `tokenizers` on the seed prompts, with ChatML.
- Other model families, so players and scorers can differ as they do for users (each its own vocabulary,
  special tokens and chat template, built on first use):
  `tiny:policy-llama` (`LlamaForCausalLM`, a Llama-3-style header template, 768 tokens) and
  `tiny:reward-mistral` (`MistralForSequenceClassification`, an `[INST]` template, 1,024 tokens).
- `tiny:guard`: a guard classifier trained here in seconds (`core.tiny_guard`), for `reward.kind: guard`.

    python -m core.tiny_models --out .sparring/tiny-models
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelError

log = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
TINY_NAMES = ("policy", "reward", "policy-llama", "reward-mistral", "guard")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BUILD_VERSION = 1  # bump when the recipe changes, so caches rebuild

# ChatML, as Qwen uses; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Shapes: small enough to build in seconds and run on two CPU cores, large enough for vLLM.
POLICY_SHAPE = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def is_tiny(ref: str) -> bool:
    return ref.startswith(TINY_PREFIX)


def resolve_model(ref: str, tiny_dir: str | Path, seed: int = 0) -> str:
    """Turn a config model reference into something `from_pretrained` and vLLM accept."""
    if not is_tiny(ref):
        return ref
    name = ref[len(TINY_PREFIX) :]
    if name not in TINY_NAMES:
        raise ModelError(
            f"unknown tiny model '{ref}'; expected one of: {', '.join('tiny:' + n for n in TINY_NAMES)}"
        )
    if name in FAMILIES:
        return str(build_family(tiny_dir, name, seed))
    if name == "guard":
        from core.tiny_guard import build_tiny_guard

        return str(build_tiny_guard(tiny_dir, seed))
    return str(build_tiny_models(tiny_dir, seed)[name])


@dataclass(frozen=True)
class Family:
    """Another tiny model family: its architecture, vocabulary, special tokens and chat template."""

    config: str  # transformers config class
    model: str  # transformers model class
    vocab_size: int
    bos: str
    eos: str  # the end of a turn: generation stops here
    pad: str
    template: str
    labels: int | None = None  # a sequence classifier's label count (a reward model: 1)


FAMILIES = {
    "policy-llama": Family(
        "LlamaConfig", "LlamaForCausalLM", 768, "<|begin_of_text|>", "<|eot_id|>", "<|finetune_pad|>",
        "{{ '<|begin_of_text|>' }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    ),
    "reward-mistral": Family(
        "MistralConfig", "MistralForSequenceClassification", 1024, "<s>", "</s>", "<pad>",
        "{{ '<s>' }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + '</s>' }}"
        "{% endif %}{% endfor %}",
        labels=1,
    ),
}  # fmt: skip


def build_family(out: str | Path, name: str, seed: int = 0) -> Path:
    """Build (or reuse) the tiny model of another family under `out/seed-<seed>/<name>`."""
    family = FAMILIES[name]
    path = Path(out) / f"seed-{seed}" / name
    stamp = path / "BUILT.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION:
        return path
    import torch
    import transformers

    log.info("building tiny %s in %s (seed %d)", name, path, seed)
    specials = [family.bos, family.eos, family.pad, *re.findall(r"<\|[a-z_]+\|>|\[/?INST\]", family.template)]
    tokenizer = _train_tokenizer(
        _default_corpus(),
        family.vocab_size,
        list(dict.fromkeys(specials)),
        family.bos,
        family.eos,
        family.pad,
    )
    tokenizer.chat_template = family.template
    ids = {f"{k}_token_id": tokenizer.convert_tokens_to_ids(t) for k, t in
           (("bos", family.bos), ("eos", family.eos), ("pad", family.pad))}  # fmt: skip
    config = getattr(transformers, family.config)(
        vocab_size=_round_up(len(tokenizer), 64), **POLICY_SHAPE, **ids,
        **({"num_labels": family.labels} if family.labels else {}),
    )  # fmt: skip
    torch.manual_seed(seed + 2)
    model = getattr(transformers, family.model)(config)
    if family.labels is None:
        model.generation_config.eos_token_id = ids["eos_token_id"]
        model.generation_config.pad_token_id = ids["pad_token_id"]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    stamp.write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
    return path


def build_tiny_models(out: str | Path, seed: int = 0, corpus: list[str] | None = None) -> dict[str, Path]:
    """Build (or reuse) the tokenizer, policy and reward model under `out/seed-<seed>`."""
    root = Path(out) / f"seed-{seed}"
    paths = {name: root / name for name in TINY_NAMES}
    stamp = root / "BUILT.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION:
        return paths
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    log.info("building tiny models in %s (seed %d)", root, seed)
    tokenizer = _train_tokenizer(corpus or _default_corpus())
    vocab = _round_up(len(tokenizer), 64)
    ids = dict(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    policy = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, **POLICY_SHAPE, **ids))
    policy.generation_config.eos_token_id = ids["eos_token_id"]
    policy.generation_config.pad_token_id = ids["pad_token_id"]
    torch.manual_seed(seed + 1)
    reward = Qwen2ForSequenceClassification(
        Qwen2Config(vocab_size=vocab, num_labels=1, **POLICY_SHAPE, **ids)
    )
    for name, model in (("policy", policy), ("reward", reward)):
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    stamp.write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
    return paths


def _train_tokenizer(
    corpus: list[str],
    vocab_size: int = 2048,
    special_tokens: list[str] = SPECIAL_TOKENS,
    bos: str = "<|endoftext|>",
    eos: str = "<|im_end|>",
    pad: str = "<|endoftext|>",
):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=[t for t in special_tokens if t not in (bos, eos, pad)],
        model_max_length=POLICY_SHAPE["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _default_corpus() -> list[str]:
    """The seed prompts plus a little plain English: enough for a BPE that splits text sensibly."""
    seeds = Path(__file__).resolve().parents[1] / "data" / "seeds.jsonl"  # the default seed file
    lines = [
        json.loads(line)["text"] for line in seeds.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    filler = (
        "I cannot help with that request because it could cause harm. "
        "Here is a safe and helpful answer to your question. "
        "Sure, here are the steps you asked for. First, second, third. "
        "Please write another question on a similar topic. Make it harder and more specific. "
    )
    return lines * 4 + [filler] * 8


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def main() -> None:
    from core.cli import main_guard, setup_logging

    p = argparse.ArgumentParser(description="Build Sparring's tiny random-init models.")
    p.add_argument("--out", default=".sparring/tiny-models")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    paths = main_guard(lambda: build_tiny_models(args.out, args.seed))
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
