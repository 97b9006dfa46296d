"""`python -m train.defender --round N`: DPO the defender on round N's best-vs-worst pairs (TRL + PEFT LoRA).

Reads the round's pairs from the store into a conversational preference `datasets.Dataset`, trains a fresh
LoRA adapter on the model that played round N (`start_from: last`) or on the base (`start_from: base`) with
TRL's `DPOTrainer`, the reference being that same model with the adapter disabled (no second copy of the
weights). Losses (`train_defender.loss`):
- `sigmoid`: DPO (Rafailov et al., arXiv 2305.18290); eva trains its solver this way (arXiv 2411.00062);
- `ipo`: IPO (Azar et al., arXiv 2310.12036), TRL's length-normalised form;
- `spac`: DPO plus SPAC's pessimism term (Ji et al., arXiv 2406.04274), see `train.losses.spac_loss`.
The adapter and the merged model are saved under `<run.dir>/models/round-N/defender/` and recorded in the
`models` table with their parent, in one transaction with the stage-log row; round N+1 then plays with it.
A logged stage is skipped (`--force` redoes it); a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from data import sql
from data.config import SparringConfig
from data.errors import ConfigError, StageError
from data.store import Store
from train.common import (
    ModelPaths,
    already_trained,
    fault_callback,
    forget_trained,
    last_checkpoint,
    launch_state,
    load_policy,
    lora_details,
    messages,
    model_paths,
    model_row,
    parent_model,
    peft_lora_config,
    save_trained,
    store_for_reading,
    stored_model,
    trainer_cli,
    use_bf16,
)
from train.losses import spac_pessimism

log = logging.getLogger(__name__)

STAGE = "train_defender"


def preference_dataset(pairs: pa.Table) -> Any:
    """TRL's conversational preference format, built column-wise in Arrow from `sql.ROUND_PAIRS` rows:
    prompt = [user turn], chosen / rejected = [assistant turn]."""
    from datasets import Dataset

    table = pa.table(
        {
            "prompt": messages("user", pairs.column("prompt")),
            "chosen": messages("assistant", pairs.column("chosen")),
            "rejected": messages("assistant", pairs.column("rejected")),
        }
    )
    return Dataset(table)


def _spac_trainer_class() -> type:
    """Built lazily so importing this module does not import TRL."""
    from trl import DPOTrainer

    class SPACTrainer(DPOTrainer):
        """`DPOTrainer` with `loss_type="sigmoid"` plus λ × SPAC's pessimism term on the rejected response.

        TRL 1.16 computes the policy and reference log-probabilities inside `_compute_loss` and has no loss hook,
        so a forward hook on the model records the per-token log-probs TRL's own passes return (the policy pass
        first, then the reference pass with the adapter disabled, unless the reference log-probs were
        precomputed). The sequence log-probs are summed exactly as TRL sums them, and `spac_pessimism` is added to
        TRL's DPO loss: the total is `train.losses.spac_loss`.
        """

        def __init__(self, *args: Any, spac_lambda: float, spac_smoothing: float, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.spac_lambda = spac_lambda
            self.spac_smoothing = spac_smoothing

        def _compute_loss(self, model, inputs, return_outputs):
            passes: list[torch.Tensor] = []

            def record(module, args, kwargs, output):
                if kwargs.get("fused_lm_head"):
                    passes.append(output.log_probs)

            handle = self.accelerator.unwrap_model(model).register_forward_hook(record, with_kwargs=True)
            try:
                result = super()._compute_loss(model, inputs, return_outputs)
            finally:
                handle.remove()
            expected = 1 if self.precompute_ref_logps else 2
            if len(passes) != expected or self.ld_alpha is not None:
                raise RuntimeError(
                    f"SPAC hook saw {len(passes)} fused forward passes, expected {expected} (policy, reference); "
                    "this TRL version computes DPO differently, pin trl==1.16 or use loss=sigmoid"
                )
            seq_len = inputs["completion_mask"].size(1) - 1
            _, policy_rejected = passes[0][:, -seq_len:].sum(dim=1).chunk(2, dim=0)
            if self.precompute_ref_logps:
                ref_rejected = inputs["ref_rejected_logps"]
            else:
                _, ref_rejected = passes[1][:, -seq_len:].sum(dim=1).chunk(2, dim=0)
            pessimism = spac_pessimism(policy_rejected, ref_rejected.detach(), self.beta, self.spac_smoothing)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["spac/pessimism"].append(pessimism.item())
            if return_outputs:
                loss, outputs = result
                return loss + self.spac_lambda * pessimism, outputs
            return result + self.spac_lambda * pessimism

    return SPACTrainer


def train_defender(cfg: SparringConfig, round_: int, force: bool = False) -> dict[str, Any]:
    """Train, save and record round `round_`'s defender; returns its `models` row (existing one if done)."""
    tcfg = cfg.train_defender
    if round_ < 1:
        raise StageError(f"--round {round_} is not a round; expected an integer >= 1")
    if tcfg.spac_smoothing <= 0:
        raise ConfigError(
            f"train_defender.spac_smoothing={tcfg.spac_smoothing!r} is out of range; expected a number > 0"
        )
    paths = model_paths(cfg, round_, "defender")
    # Read everything, then close the store: training can take hours and must not hold DuckDB's write lock.
    state = launch_state()
    with store_for_reading(cfg, state) as store:
        if already_trained(store, round_, STAGE, force):
            return stored_model(store, round_, "defender")
        pairs = store.arrow(sql.ROUND_PAIRS, [round_])
        if pairs.num_rows == 0:
            raise StageError(
                f"round {round_} has 0 preference pairs (every prompt's responses tied or missed select.margin); "
                "expected at least one pair to train the defender"
            )
        if force:
            forget_trained(store, state, round_, STAGE, paths)
        parent = parent_model(store, cfg, "defender", round_, tcfg.start_from)

    started = time.perf_counter()
    log.info(
        "round %d: training the defender from %s on %d pairs (%s)", round_, parent, pairs.num_rows, tcfg.loss
    )
    metrics = _fit(cfg, parent, preference_dataset(pairs), paths)
    if not state.is_main_process:
        return {}  # under `accelerate launch`, the main process saves and records the model
    details = {
        "loss": tcfg.loss,
        "beta": tcfg.beta,
        "spac_lambda": tcfg.spac_lambda if tcfg.loss == "spac" else None,
        "spac_smoothing": tcfg.spac_smoothing if tcfg.loss == "spac" else None,
        "pairs": pairs.num_rows,
        "start_from": tcfg.start_from,
        "lora": lora_details(tcfg.lora),
        **metrics,
    }
    with Store.for_run(cfg.run.dir) as store:
        with store.stage(round_, STAGE, started) as result:
            result.rows = store.insert("models", model_row(round_, "defender", paths, parent, details))
            result.details = {"parent": parent, "path": str(paths.merged), **details}
        row = stored_model(store, round_, "defender")
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    return row


def dpo_args(cfg: SparringConfig, output_dir: Path, bf16: bool) -> Any:
    """TRL's `DPOConfig` from `train_defender.*`. It sets no FSDP/DeepSpeed option: under `accelerate launch`
    the launcher's configuration decides the parallelism."""
    from trl import DPOConfig

    tcfg = cfg.train_defender
    return DPOConfig(
        output_dir=str(output_dir),
        loss_type=["ipo" if tcfg.loss == "ipo" else "sigmoid"],
        beta=tcfg.beta,
        learning_rate=tcfg.learning_rate,
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps,
        per_device_train_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        max_length=tcfg.max_length,
        lr_scheduler_type=tcfg.lr_scheduler,
        warmup_steps=tcfg.warmup_ratio,  # transformers reads a value < 1 as a fraction of the steps
        gradient_checkpointing=tcfg.gradient_checkpointing,
        precompute_ref_log_probs=tcfg.precompute_ref_log_probs,
        bf16=bf16,
        report_to=tcfg.report_to,
        save_steps=tcfg.save_steps,
        save_total_limit=2,
        seed=cfg.run.seed,
        logging_steps=max(1, min(10, tcfg.save_steps)),
    )


def build_trainer(cfg: SparringConfig, model: Any, tokenizer: Any, dataset: Any, output_dir: Path) -> Any:
    """The defender's trainer: TRL's `DPOTrainer` (or `SPACTrainer`) with a fresh LoRA on `model`; the
    reference is `model` with the adapter disabled. Benchmarks build it here too, so they time what we run."""
    from trl import DPOTrainer

    tcfg = cfg.train_defender
    trainer_cls: type = DPOTrainer
    extra: dict[str, Any] = {}
    if tcfg.loss == "spac":
        trainer_cls = _spac_trainer_class()
        extra = {"spac_lambda": tcfg.spac_lambda, "spac_smoothing": tcfg.spac_smoothing}
    return trainer_cls(
        model=model,
        args=dpo_args(cfg, output_dir, bf16=next(model.parameters()).dtype == torch.bfloat16),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_lora_config(tcfg.lora),
        callbacks=[fault_callback(STAGE)],
        **extra,
    )


def _fit(cfg: SparringConfig, parent: str, dataset: Any, paths: ModelPaths) -> dict[str, Any]:
    """Train a fresh LoRA on `parent`, resuming from a checkpoint if a killed run left one; saves adapter +
    merged model (main process only)."""
    model, tokenizer = load_policy(parent, use_bf16(cfg.train_defender.bf16))
    trainer = build_trainer(cfg, model, tokenizer, dataset, paths.checkpoints)
    resume = last_checkpoint(paths.checkpoints)
    if resume:
        log.info("resuming from %s", resume)
    output = trainer.train(resume_from_checkpoint=resume)
    if trainer.accelerator.is_main_process:
        save_trained(trainer.model, tokenizer, paths)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "train_loss": output.training_loss,
        "last_log": history[-1] if history else {},
        "processes": trainer.accelerator.num_processes,
    }


def main() -> None:
    trainer_cli(__doc__ or "", "defender", train_defender)


if __name__ == "__main__":
    main()
