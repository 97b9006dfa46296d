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
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from core.config import SparringConfig
from core.errors import ConfigError, StageError
from data import sql
from data.store import Store
from train.common import fault_callback, messages, peft_lora_config
from train.losses import spac_pessimism
from train.recipe import CarryOver, Role, train_round, trainer_cli

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


class DefenderRole(Role):
    """DPO on the round's best-vs-worst pairs."""

    name = "defender"
    stage = STAGE

    def settings(self, cfg: SparringConfig) -> Any:
        return cfg.train_defender

    def check(self, cfg: SparringConfig) -> None:
        if cfg.train_defender.spac_smoothing <= 0:
            raise ConfigError(
                f"train_defender.spac_smoothing={cfg.train_defender.spac_smoothing!r} is out of range; "
                "expected a number > 0"
            )

    def read(self, store: Store, cfg: SparringConfig, round_: int) -> pa.Table | CarryOver:
        pairs = store.arrow(sql.ROUND_PAIRS, [round_])
        if pairs.num_rows == 0 and cfg.train_defender.on_zero_pairs == "carry_over":
            return CarryOver(f"round {round_} has 0 preference pairs")
        if pairs.num_rows == 0:
            raise StageError(
                f"round {round_} has 0 preference pairs (every prompt's responses tied or missed select.margin); "
                "expected at least one pair to train the defender"
            )
        return pairs

    def describe(self, pairs: pa.Table) -> str:
        return f"{pairs.num_rows} pairs"

    def trainer(
        self, cfg: SparringConfig, model: Any, tokenizer: Any, pairs: pa.Table, output_dir: Path
    ) -> Any:
        return build_trainer(cfg, model, tokenizer, preference_dataset(pairs), output_dir)

    def details(self, cfg: SparringConfig, pairs: pa.Table) -> dict[str, Any]:
        tcfg = cfg.train_defender
        return {
            "loss": tcfg.loss,
            "beta": tcfg.beta,
            "spac_lambda": tcfg.spac_lambda if tcfg.loss == "spac" else None,
            "spac_smoothing": tcfg.spac_smoothing if tcfg.loss == "spac" else None,
            "pairs": pairs.num_rows,
        }


DEFENDER = DefenderRole()


def train_defender(
    cfg: SparringConfig, round_: int, force: bool = False, drop_later: bool = False
) -> dict[str, Any]:
    """Train, save and record round `round_`'s defender; returns its `models` row (existing one if done)."""
    return train_round(DEFENDER, cfg, round_, force, drop_later)


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


def main() -> None:
    trainer_cli(__doc__ or "", DEFENDER, train_defender)


if __name__ == "__main__":
    main()
