"""Trained players as LoRA adapters on their base model: what vLLM serves and what training starts from.

Each round trains a fresh LoRA on the model that played it (the reference policy of the next DPO round is that
model, as in GPO and eva's iterative recipe). Merging it into the weights and reloading the merged checkpoint in
vLLM costs a full save and an engine start per player and round (minutes and tens of GB for a 7B). Instead the
new adapter is *stacked* on the player's earlier ones into one adapter on the base model:

    W + s1·B1·A1 + s2·B2·A2  =  W + 1·[s1·B1, s2·B2]·[A1; A2]      (s = alpha / r, or alpha / sqrt(r) with rsLoRA)

exactly, as one LoRA of rank r1 + r2 with alpha = rank (scale 1). Modules that only one part adapts get zero
blocks from the other. The stacked adapter is an ordinary PEFT adapter directory, so one vLLM engine on the base
serves both players of every round through `LoRARequest`s, and `load_policy` rebuilds the exact merged model
for training by merging it in memory. The rank grows by r each round; vLLM serves ranks up to 512.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
_A, _B = ".lora_A.weight", ".lora_B.weight"


def is_adapter(ref: str | Path | None) -> bool:
    """A local PEFT adapter directory (what a trained player is when `vllm.serve_adapters` is on)."""
    return ref is not None and (Path(ref) / ADAPTER_CONFIG).is_file()


def adapter_config(ref: str | Path) -> dict[str, Any]:
    return dict(json.loads((Path(ref) / ADAPTER_CONFIG).read_text()))


def adapter_base(ref: str | Path) -> str:
    """The base model an adapter applies to (as written when it was trained: a path or a Hub id)."""
    return str(adapter_config(ref)["base_model_name_or_path"])


def adapter_rank(ref: str | Path) -> int:
    return int(adapter_config(ref)["r"])


def load_causal_lm(path: str, dtype: Any) -> Any:
    """A causal LM from a model directory or Hub id, or from a stacked adapter merged into its base in memory:
    the exact model that played (training starts from it, and DPO compares against it)."""
    from transformers import AutoModelForCausalLM

    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def serving_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of `rank`."""
    for allowed in VLLM_RANKS:
        if allowed >= rank:
            return allowed
    raise ModelError(
        f"a LoRA adapter of rank {rank} is more than vLLM serves ({VLLM_RANKS[-1]}); expected "
        "vllm.serve_adapters=false (merged models) for games this long, or a smaller train_*.lora.r"
    )


def _scale(config: dict[str, Any]) -> float:
    r = int(config["r"])
    return float(config["lora_alpha"]) / (r**0.5 if config.get("use_rslora") else r)


def _check_stackable(ref: Path, config: dict[str, Any]) -> None:
    unsupported = {
        "peft_type": config.get("peft_type", "LORA") != "LORA",
        "use_dora": bool(config.get("use_dora")),
        "modules_to_save": bool(config.get("modules_to_save")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "bias": config.get("bias", "none") != "none",
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ModelError(
            f"adapter '{ref}' sets {bad[0]}={config.get(bad[0])!r}, which cannot be stacked into one LoRA; "
            "expected a plain LoRA, or vllm.serve_adapters=false (merged models)"
        )


def stack_adapters(parts: list[Path], out: Path, base: str) -> int:
    """Write to `out` one LoRA adapter on `base` equal to applying `parts` in order; returns its rank."""
    import torch
    from safetensors.torch import load_file, save_file

    configs = [adapter_config(p) for p in parts]
    for part, config in zip(parts, configs, strict=True):
        _check_stackable(part, config)
    weights = [load_file(str(p / ADAPTER_WEIGHTS)) for p in parts]
    for part, tensors in zip(parts, weights, strict=True):
        odd = [k for k in tensors if not k.endswith((_A, _B))]
        if odd:
            raise ModelError(f"adapter '{part}' has weights other than LoRA A/B ({odd[0]}); cannot stack it")
    modules = sorted({k[: -len(_A)] for tensors in weights for k in tensors if k.endswith(_A)})
    ranks = [int(c["r"]) for c in configs]
    stacked: dict[str, torch.Tensor] = {}
    for module in modules:
        shapes = [(t[module + _A].shape[1], t[module + _B].shape[0]) for t in weights if module + _A in t]
        fan_in, fan_out = shapes[0]
        a_blocks, b_blocks = [], []
        for tensors, config, r in zip(weights, configs, ranks, strict=True):
            if module + _A in tensors:
                a_blocks.append(tensors[module + _A].float())
                b_blocks.append(tensors[module + _B].float() * _scale(config))
            else:  # this part leaves the module alone
                a_blocks.append(torch.zeros(r, fan_in))
                b_blocks.append(torch.zeros(fan_out, r))
        stacked[module + _A] = torch.cat(a_blocks, dim=0).contiguous()
        stacked[module + _B] = torch.cat(b_blocks, dim=1).contiguous()
    rank = sum(ranks)
    targets = sorted({m for c in configs for m in _names(c["target_modules"])})
    config = {
        **configs[-1],
        "r": rank,
        "lora_alpha": rank,  # scale 1: each part's own scale is folded into its B block
        "use_rslora": False,
        "target_modules": targets,
        "base_model_name_or_path": base,
        "lora_dropout": 0.0,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(stacked, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return rank


def _names(target_modules: Any) -> list[str]:
    return [target_modules] if isinstance(target_modules, str) else list(target_modules)
