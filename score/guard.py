"""A guard classifier (`reward.kind: guard`) as a `Scorer`: a causal LM's next-token probabilities of its labels.

GPO (arXiv 2406.10977) rewards the defender with a safety classifier's probability that the answer is safe
(Llama Guard in the authors' code). Each (prompt, response) is rendered the way the guard was trained to read
it (`reward.guard`, `core.config.GuardConfig`): its own chat template over the conversation (Llama Guard), or
a text template with `{prompt}` / `{response}` sent as one user turn (ShieldGemma) or verbatim (WildGuard),
then `answer_prefix`. One forward pass per batch reads the distribution of the next token at each row's last
real token; the score is P(safe) renormalised over the two labels, or the log-odds of safe over unsafe.

Batches are built as the reward model's are (`score.batching`: length-sorted, right-padded, under a padded-token
budget, bf16 on GPU). A conversation longer than `reward.max_length` keeps its beginning and its last
`TAIL_TOKENS` tokens (the guard's question and answer cue sit at the end; cutting them would score noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from core.config import GuardConfig, SparringConfig
from core.errors import ConfigError, ModelError
from core.preflight import check_model_dir
from core.tiny_models import resolve_model
from score.batching import last_hidden, padded_batches, pick_device, pick_dtype

TAIL_TOKENS = 64


@dataclass(frozen=True)
class Labels:
    safe: int
    unsafe: int


def label_ids(tokenizer: Any, guard: GuardConfig, model: str, key: str = "reward.guard") -> Labels:
    """The token ids of the two labels; a label that is not exactly one token of the guard's vocabulary is a
    one-line config error (the score reads one next-token probability per label)."""
    ids = []
    for field in ("safe_label", "unsafe_label"):
        label = getattr(guard, field)
        tokens = tokenizer.encode(label, add_special_tokens=False)
        if len(tokens) != 1:
            pieces = tokenizer.convert_ids_to_tokens(tokens)
            raise ConfigError(
                f"{key}.{field}={label!r} is {len(tokens)} tokens in the vocabulary of guard '{model}' "
                f"({pieces}); expected a label that is exactly one token"
            )
        ids.append(tokens[0])
    return Labels(*ids)


def render(tokenizer: Any, guard: GuardConfig, prompt: str, response: str) -> str:
    """The text the guard reads for one (prompt, response), up to where its label comes."""
    if not guard.template:
        conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    else:
        filled = guard.template.replace("{prompt}", prompt).replace("{response}", response)
        text = (
            tokenizer.apply_chat_template(
                [{"role": "user", "content": filled}], tokenize=False, add_generation_prompt=True
            )
            if guard.chat
            else filled
        )
    return text + guard.answer_prefix


class GuardScorer:
    def __init__(self, cfg: SparringConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        rcfg = cfg.reward
        self.name = rcfg.model
        self.guard = rcfg.guard
        path = resolve_model(rcfg.model, cfg.run.tiny_models_dir)
        self.device = pick_device(rcfg.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as e:
            raise ModelError(f"guard '{rcfg.model}' cannot be loaded: {str(e).splitlines()[0]}") from None
        check_guard_tokenizer(self.tokenizer, self.guard, rcfg.model)
        self.labels = label_ids(self.tokenizer, self.guard, rcfg.model)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(rcfg.dtype, self.device))
        except (OSError, ValueError) as e:
            raise ModelError(
                f"guard '{rcfg.model}' cannot be loaded as a causal LM: {str(e).splitlines()[0]}"
            ) from None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(self.device).eval()
        self.max_length = rcfg.max_length
        self.batch_tokens = rcfg.batch_tokens
        self.stats = {"real_tokens": 0, "padded_tokens": 0, "truncated": 0}

    def encode(self, prompts: list[str], responses: list[str]) -> list[list[int]]:
        texts = [render(self.tokenizer, self.guard, p, r) for p, r in zip(prompts, responses, strict=True)]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = []
        for ids in encoded:
            if len(ids) > self.max_length:
                self.stats["truncated"] += 1
                keep = max(0, self.max_length - TAIL_TOKENS)
                ids = ids[:keep] + ids[-(self.max_length - keep) :]
            out.append(ids)
        return out

    @torch.inference_mode()
    def label_log_probs(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """rows × 2: log P(safe label), log P(unsafe label) of the next token, over the full vocabulary."""
        encoded = self.encode(prompts, responses)
        out = torch.full((len(encoded), 2), math.nan, dtype=torch.float64)
        pick = torch.tensor([self.labels.safe, self.labels.unsafe])
        for batch, ids, mask in padded_batches(self.tokenizer, encoded, self.batch_tokens):
            ids, mask = ids.to(self.device), mask.to(self.device)
            hidden = last_hidden(self.model, ids, mask)
            if hidden is not None:
                logits = self.model.get_output_embeddings()(hidden)
            else:  # no separable backbone: the model's own forward, read at the last real token
                full = self.model(input_ids=ids, attention_mask=mask).logits
                logits = full[torch.arange(ids.shape[0], device=ids.device), mask.sum(dim=1) - 1]
            log_probs = torch.log_softmax(logits.float(), dim=-1)[:, pick.to(logits.device)]
            out[batch] = log_probs.double().cpu()
            self.stats["real_tokens"] += int(mask.sum())
            self.stats["padded_tokens"] += mask.numel()
        return out

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        log_probs = self.label_log_probs(prompts, responses)
        log_odds = log_probs[:, 0] - log_probs[:, 1]
        values = torch.sigmoid(log_odds) if self.guard.output == "p_safe" else log_odds
        return values.tolist()

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def check_guard_tokenizer(tokenizer: Any, guard: GuardConfig, model: str) -> None:
    """What the rendering needs from the tokenizer: a chat template unless the template is sent verbatim."""
    if (not guard.template or guard.chat) and not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"guard '{model}' has no chat template; expected a tokenizer with chat_template, or "
            "reward.guard.template with chat: false"
        )


def check_guard(ref: str, guard: GuardConfig, key: str = "reward.guard") -> None:
    """Preflight of a local guard (its config and tokenizer files, no weights): a causal LM, a chat template
    where the rendering needs one, each label one token. A Hub id is checked when the scorer loads it."""
    import json

    from transformers import AutoTokenizer

    path = check_model_dir(ref, "guard")
    if path is None:
        return
    architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
        raise ModelError(
            f"guard '{ref}' is a {architectures[0]}; expected a causal LM that answers with label words "
            "(a sequence classifier is reward.kind: reward_model)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ModelError(f"guard '{ref}' cannot be loaded: {str(e).splitlines()[0]}") from None
    check_guard_tokenizer(tokenizer, guard, ref)
    label_ids(tokenizer, guard, ref, key)
