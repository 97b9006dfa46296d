"""What both trainers share: which model to start from, loading it, LoRA, saving the trained player, lineage.

Each trained model lives under `<run.dir>/models/round-N/<role>/`:
- `adapter/`: the round's PEFT LoRA adapter on its parent (+ tokenizer), small, for inspection or re-merging;
- `stacked/` (`vllm.serve_adapters`, the default): the player as one LoRA adapter on the base model, this round's
  adapter stacked on the earlier rounds' (`core.adapters`), which round N+1's vLLM serves with no reload;
- `merged/` (`vllm.serve_adapters=false`): the parent with the adapter merged in, a plain checkpoint;
- `checkpoints/`: the trainer's resumable checkpoints while training runs (removed once the stage is stored).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from core import faults
from core.adapters import adapter_base, is_adapter, load_causal_lm, stack_adapters
from core.config import LoraConfig, SparringConfig
from core.errors import ConfigError, ModelError, StageError
from data import sql
from data.lineage import base_model, check_history, remove_model_dirs
from data.store import Store

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPaths:
    """Where one round's trained model of one role is written."""

    root: Path
    serve_adapters: bool = True

    @property
    def player(self) -> Path:
        """What the next round plays with (the `models` row's path)."""
        return self.stacked if self.serve_adapters else self.merged

    @property
    def stacked(self) -> Path:
        return self.root / "stacked"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"


def model_paths(cfg: SparringConfig, round_: int, role: str) -> ModelPaths:
    return ModelPaths(Path(cfg.run.dir) / "models" / f"round-{round_}" / role, cfg.vllm.serve_adapters)


def parent_model(store: Store, cfg: SparringConfig, role: str, round_: int, start_from: str) -> str:
    """What training on round N starts from: `last` = the model that played round N (the newest one trained on
    an earlier round, else the base); `base` = the configured base model."""
    if start_from == "last":
        trained = store.model_for(role, round_)
        if trained is not None:
            return trained
    return base_model(cfg, role)


def use_bf16(setting: str) -> bool:
    """`auto` = bf16 when a CUDA GPU supports it (fp32 on CPU); `true` / `false` force it."""
    value = setting.strip().lower()
    if value == "auto":
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"bf16={setting!r} is not allowed; expected one of: auto, true, false")


def load_policy(path: str, bf16: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer, in bf16 or fp32; the tokenizer must have a chat template (prompts are chats).

    A stacked adapter (a player trained with `vllm.serve_adapters`) is merged into its base in memory: the model
    the next round's training starts from (and compares against, as DPO's reference) is the one that played."""
    import torch
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_causal_lm(path, torch.bfloat16 if bf16 else torch.float32)
    except OSError as e:
        raise ModelError(f"cannot load model '{path}': {str(e).splitlines()[0]}") from None
    if not tokenizer.chat_template:
        raise ModelError(f"model '{path}' has no chat template; expected a chat (instruct) model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def peft_lora_config(lora: LoraConfig) -> PeftLoraConfig:
    """PEFT's LoraConfig from ours (a fresh adapter each round, stacked or merged at the end)."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def save_trained(model: Any, tokenizer: PreTrainedTokenizerBase, paths: ModelPaths, parent: str) -> None:
    """Save the round's LoRA adapter, then the player the next round plays with: the adapter stacked on the
    parent's (one adapter on the base model, `core.adapters`), or the parent with it merged in (a plain
    transformers checkpoint that vLLM loads with no PEFT involved)."""
    for target in (paths.adapter, paths.stacked, paths.merged):
        if target.exists():
            shutil.rmtree(target)
    model.save_pretrained(paths.adapter)
    tokenizer.save_pretrained(paths.adapter)
    if paths.serve_adapters:
        earlier = [Path(parent)] if is_adapter(parent) else []
        base = adapter_base(parent) if earlier else parent
        rank = stack_adapters([*earlier, paths.adapter], paths.stacked, base)
        tokenizer.save_pretrained(paths.stacked)
        log.info("saved adapter to %s and the player (rank-%d adapter on %s) to %s", paths.adapter, rank, base,
                 paths.stacked)  # fmt: skip
        return
    merged = model.merge_and_unload()
    merged.save_pretrained(paths.merged)
    tokenizer.save_pretrained(paths.merged)
    log.info("saved adapter to %s and merged model to %s", paths.adapter, paths.merged)


def fault_callback(stage: str) -> Any:
    """A `TrainerCallback` calling `core.faults.point("<stage>:step<N>")` after optimizer step N, before that
    step's checkpoint is saved: the crash/resume tests kill training there (a no-op unless SPARRING_FAULT is set)."""
    from transformers import TrainerCallback

    class FaultPoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            faults.point(f"{stage}:step{state.global_step}")

    return FaultPoint()


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-*` of a killed run, to resume from (transformers' own lookup)."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def model_row(
    round_: int, role: str, paths: ModelPaths | None, parent: str, details: dict[str, Any]
) -> pa.Table:
    """The `models` row recording which model a round produced and what it was trained from (lineage).

    `paths` None records a carried-over model: the parent itself plays the next round (no adapter)."""
    return pa.table(
        {
            "round": pa.array([round_], pa.int64()),
            "role": [role],
            "path": [str(paths.player) if paths else parent],
            "adapter_path": pa.array([str(paths.adapter) if paths else None], pa.string()),
            "parent": [parent],
            "details": [json.dumps(details, sort_keys=True, default=str)],
        }
    )


def lora_details(lora: LoraConfig) -> dict[str, Any]:
    return asdict(lora)


def messages(role: str, content: pa.Array) -> pa.ListArray:
    """One single-message chat per row, `[{"role": role, "content": content[i]}]`, built column-wise in Arrow."""
    content = content.combine_chunks() if isinstance(content, pa.ChunkedArray) else content
    n = len(content)
    turns = pa.StructArray.from_arrays(
        [pa.repeat(pa.scalar(role), n).cast(pa.string()), content.cast(pa.string())],
        names=["role", "content"],
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), turns)


def completion_logps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log π(completion | chat(prompt)) over the completion's tokens, and the token counts.

    Tokenised as TRL does for conversational data: the user turn with the generation prompt, then the assistant
    turn; the completion is what follows the common prefix (so the end-of-turn token counts, as in training).
    """
    import torch

    from train.losses import token_log_probs

    pad = collator(tokenizer)
    sums, counts = [], []
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        ids = prompt_completion_ids(
            tokenizer, prompts[start : start + batch_size], completions[start : start + batch_size]
        )
        rows = labelled(**ids, max_length=1 << 30)
        batch = pad([dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)])
        input_ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        completion = (batch["labels"] != -100).long().to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        logps = token_log_probs(logits[:, :-1], input_ids[:, 1:]) * completion[:, 1:]
        sums.append(logps.sum(dim=1).cpu())
        counts.append(completion[:, 1:].sum(dim=1).cpu())
    return torch.cat(sums), torch.cat(counts)


def _prompt_completion_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str
) -> tuple[list[int], list[int]]:
    user = [{"role": "user", "content": prompt}]
    prompt_ids = _ids(tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True))
    full_ids = _ids(
        tokenizer.apply_chat_template(user + [{"role": "assistant", "content": completion}], tokenize=True)
    )
    split = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:split], full_ids[split:]


def prompt_completion_ids(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> dict[str, list[list[int]]]:
    """Batched chat tokenisation for a `datasets.map(batched=True)`: prompt ids and completion ids per row."""
    pairs = [_prompt_completion_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    return {"prompt_ids": [p for p, _ in pairs], "completion_ids": [c for _, c in pairs]}


def collator(tokenizer: Any) -> Any:
    """Right-pads [prompt; completion] rows: ids with the pad token, labels with -100 (the loss ignores the
    prompt's tokens and the padding); other per-example values (the attacker's `weight`) are stacked."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")


def labelled(prompt_ids: list[list[int]], completion_ids: list[list[int]], max_length: int) -> dict[str, Any]:
    """`input_ids` = prompt + completion, `labels` = -100 over the prompt, both cut at `max_length`."""
    return {
        "input_ids": [(p + c)[:max_length] for p, c in zip(prompt_ids, completion_ids, strict=True)],
        "labels": [
            ([-100] * len(p) + c)[:max_length] for p, c in zip(prompt_ids, completion_ids, strict=True)
        ],
    }


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _ids(out: Any) -> list[int]:
    """`apply_chat_template(tokenize=True)` returns a list or, in newer transformers, a BatchEncoding."""
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def launch_state() -> Any:
    """accelerate's process state: one process for `python -m train.<role>`, N under `accelerate launch`.

    Made before the trainer's (it is a process-wide singleton), so it must pick the device the trainer would:
    without CUDA, processes join over gloo on the CPU (`cpu=True`), as transformers does for `use_cpu`.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


@contextlib.contextmanager
def store_for_reading(cfg: SparringConfig, state: Any) -> Iterator[Store]:
    """The run store for a trainer's read phase. DuckDB allows one writing process or many readers, never both:
    under `accelerate launch` the main process opens it first, read-write (`--force` resets the stage there),
    and the other processes afterwards, read-only. Only the main process writes the result."""
    with state.main_process_first():
        with Store.for_run(cfg.run.dir, read_only=not state.is_main_process, keep_if_unused=False) as store:
            yield store


def already_trained(store: Store, round_: int, stage: str, force: bool) -> bool:
    """True when `stage` of `round_` is in the store and not forced (the trainer returns the stored model);
    raises when the round has not been selected yet, since there is nothing to train on."""
    if store.stage_done(round_, stage) and not force:
        log.info("round %d: %s already done; --force to redo", round_, stage)
        return True
    if not store.stage_done(round_, "select"):
        raise StageError(
            f"round {round_} has no select stage in the store; run `python -m generate.round --round {round_}` first"
        )
    return False


def forget_trained(
    store: Store, state: Any, round_: int, stage: str, paths: ModelPaths, drop_later: bool = False
) -> None:
    """`--force`: the main process removes the stage's rows and its model directory before retraining. A model
    that a later round played with is never overwritten: refused, unless `drop_later` drops those rounds too."""
    stale = check_history(store, round_, f"--force {stage}", drop_later)
    if state.is_main_process:
        log.info("round %d: redoing %s", round_, ", ".join(store.reset_from(round_, stage, drop_later)))
        shutil.rmtree(paths.root, ignore_errors=True)
        remove_model_dirs(stale)


def stored_model(store: Store, round_: int, role: str) -> dict[str, Any]:
    """The `models` row of `role` trained on `round_` ({} if none)."""
    rows = store.rows(sql.MODEL_ROW, [round_, role])
    return rows[0] if rows else {}
