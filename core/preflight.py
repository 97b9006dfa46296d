"""Checks on models before any engine loads, so a bad path or model fails in a second, not after minutes.

Each failure is a one-line `ModelError` naming the model and what was expected; nothing is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.adapters import adapter_base, adapter_rank, is_adapter
from core.errors import ModelError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def looks_local(ref: str) -> bool:
    """Paths a user clearly meant as local: absolute, ./, ../, ~, or existing on disk."""
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).exists() or not _HUB_ID.match(ref)


def check_model_dir(ref: str, role: str) -> Path | None:
    """The local directory of `ref` (None for a Hub id, checked by the loader); errors if it is unusable."""
    if not looks_local(ref):
        return None
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"{role} model '{ref}' does not exist; expected a local model directory or a Hub id ORG/NAME"
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"{role} model '{ref}' has no config.json; expected a transformers model directory")
    return path


def check_chat_model(ref: str, role: str) -> None:
    """Attacker and defender are prompted through their chat template, so they must have one. A trained player
    saved as a LoRA adapter (`core.adapters`) carries its tokenizer; its base model must be usable too."""
    if is_adapter(ref):
        check_chat_model(adapter_base(ref), role)
        path: Path | None = Path(ref)
    else:
        path = check_model_dir(ref, role)
    if path is None:
        return
    if not _has_chat_template(path):
        raise ModelError(
            f"{role} model '{ref}' has no chat template; expected a tokenizer with chat_template (an instruct model)"
        )


def check_reward_model(ref: str) -> None:
    """A reward model is a sequence classifier with exactly one label and a chat template."""
    path = check_model_dir(ref, "reward")
    if path is None:
        return
    config = json.loads((path / "config.json").read_text())
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
    if labels != 1:
        raise ModelError(f"reward model '{ref}' has {labels} labels; expected 1 (a scalar reward head)")
    if not _has_chat_template(path):
        raise ModelError(
            f"reward model '{ref}' has no chat template; expected a tokenizer with chat_template"
        )


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        return bool(json.loads(tokenizer_config.read_text()).get("chat_template"))
    return False


def describe_model(ref: str, role: str) -> str:
    """For a dry run: what `ref` is, checked as far as can be without loading it (a tiny model is built on use)."""
    from core.tiny_models import is_tiny

    if is_tiny(ref):
        return f"{ref} (tiny, built locally on first use)"
    if is_adapter(ref):
        return f"{ref} (rank-{adapter_rank(ref)} LoRA adapter on {describe_model(adapter_base(ref), role)})"
    path = check_model_dir(ref, role)
    if path is None:
        return f"{ref} (Hub id: checked by name only, downloaded on first use)"
    config = json.loads((path / "config.json").read_text())
    return f"{ref} (local {', '.join(config.get('architectures') or ['?'])})"
