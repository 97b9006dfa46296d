"""What the model scorers share: device and dtype choice, and length-sorted, right-padded batches under a
padded-token budget (padding stays small; right padding keeps each row's result identical to scoring it alone
under causal attention, read at its last real token)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from core.errors import StageError


def pick_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on a GPU that has it, fp32 otherwise."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return getattr(torch, name)
    except AttributeError:
        raise StageError(
            f"reward.dtype='{name}' is not a torch dtype; expected auto, float32, bfloat16 or float16"
        ) from None


def padded_batches(
    tokenizer: Any, encoded: list[list[int]], budget: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Length-sorted batches under the padded-token budget, right-padded by the tokenizer: the rows'
    indices, their ids and attention mask."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for batch in length_batches(order, encoded, budget):
        padded = tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding_side="right", return_tensors="pt"
        )
        yield batch, padded["input_ids"], padded["attention_mask"]


def length_batches(order: list[int], encoded: list[list[int]], budget: int) -> list[list[int]]:
    """Greedy batches over length-sorted rows: a batch grows while rows x longest row <= budget."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = len(encoded[i])
        if current and (len(current) + 1) * width > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def last_hidden(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """Each row's hidden state at its last real token (right padding), from the model's backbone; None when the
    model has no `base_model_prefix` backbone (the caller then runs the model's own forward)."""
    backbone = getattr(model, model.base_model_prefix, None)
    if backbone is None:
        return None
    hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(ids.shape[0], device=ids.device), last]
