"""A transformers reward model (`AutoModelForSequenceClassification`, one label) as a `Scorer`.

Each (prompt, response) is rendered with the reward model's own chat template, as its trainers did. Rows are
sorted by length and packed into batches under a padded-token budget, so padding stays small; right padding
keeps each row's logits identical to scoring it alone (causal attention, last non-pad token).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import torch

from core.config import SparringConfig
from core.errors import ModelError
from core.tiny_models import resolve_model
from score.batching import last_hidden, padded_batches, pick_device, pick_dtype

log = logging.getLogger(__name__)


class RewardModelScorer:
    def __init__(self, cfg: SparringConfig):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        rcfg = cfg.reward
        self.name = rcfg.model
        path = resolve_model(rcfg.model, cfg.run.tiny_models_dir)
        self.device = pick_device(rcfg.device)
        dtype = pick_dtype(rcfg.dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        except OSError as e:
            raise ModelError(
                f"reward model '{rcfg.model}' cannot be loaded: {str(e).splitlines()[0]}"
            ) from None
        if self.model.config.num_labels != 1:
            raise ModelError(
                f"reward model '{rcfg.model}' has {self.model.config.num_labels} labels; expected 1 (a scalar reward)"
            )
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(
                f"reward model '{rcfg.model}' has no chat template; expected a tokenizer with chat_template"
            )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.max_length = rcfg.max_length
        self.batch_tokens = rcfg.batch_tokens
        self.stats = {"real_tokens": 0, "padded_tokens": 0, "truncated": 0}

    def encode(self, prompts: list[str], responses: list[str]) -> list[list[int]]:
        """Token ids of each conversation, truncated to `max_length` (counted in `stats`)."""
        conversations = [
            [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
            for p, r in zip(prompts, responses, strict=True)
        ]
        rendered = self.tokenizer.apply_chat_template(conversations, tokenize=False)
        encoded = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        self.stats["truncated"] += sum(len(ids) > self.max_length for ids in encoded)
        return [ids[: self.max_length] for ids in encoded]

    def batches(self, encoded: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        return padded_batches(self.tokenizer, encoded, self.batch_tokens)

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        encoded = self.encode(prompts, responses)
        values = [math.nan] * len(encoded)
        for batch, ids, mask in self.batches(encoded):
            logits = self._forward(ids.to(self.device), mask.to(self.device))
            for row, i in enumerate(batch):
                values[i] = float(logits[row])
            self.stats["real_tokens"] += int(mask.sum())
            self.stats["padded_tokens"] += mask.numel()
        return values

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Right padding: read the reward at each row's last real token ourselves rather than trusting
        # pad-token detection, which a pad id inside the text would fool. Models without the usual
        # backbone + `score` head layout fall back to their own forward.
        head = getattr(self.model, "score", None)
        hidden = last_hidden(self.model, ids, mask) if head is not None else None
        if head is None or hidden is None:
            return self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
        return head(hidden)[:, 0].float()

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
