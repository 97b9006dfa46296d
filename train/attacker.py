"""`python -m train.attacker --round N`: reward-weighted fine-tuning of the attacker on its own round-N prompts.

GPO (Zheng et al., arXiv 2406.10977) trains its attacker with PPO on reward = P(unsafe) − diversity penalties
against earlier attacks. Sparring keeps that reward and replaces PPO by one offline, reward-weighted
regression step per round:

    failure_i   = z-score over the round of ( −mean defender reward on prompt i )
    novelty_i   = `train.novelty.novelty`: 1 − closest word-n-gram Jaccard (weight 5) and 1 − closest embedding
                  cosine (weight 1), against the round's other prompts and every earlier round's (GPO's buffer)
    reward_i    = z-score over the round of ( failure_i + λ · z-score(novelty_i) )       λ = diversity_weight
    w_i         = N · softmax(reward / T)_i,  T ≥ weight_temperature raised until ESS(w) ≥ ess_floor · N

Both terms are standardised so λ is their relative weight whatever their raw scales (raw novelty spans ~0.1
within a round, and with λ on the raw term the toy world's λ = 0, 1 and 5 attackers came out the same); the sum
is standardised again so λ changes the balance of the two, not how peaked the weights are. The effective sample
size ESS = (Σw)² / Σw² is floored because reward-weighted regression on a handful of prompts collapses the
attacker onto them whatever they are (docs/toy-world.md, (d)): a per-prompt bonus changes *which* prompts are
imitated, the floor bounds *how few*. The stored `diversity` is the raw novelty (readable, in [0, 1]).

The weights are non-negative with mean 1, so the loss keeps the scale of an ordinary NLL; T → ∞ gives plain
SFT on all prompts. The loss is `train.losses.weighted_nll` on the tokens of the prompt the attacker wrote,
given the instruction it was asked (the exact chat vLLM generated from), with a fresh LoRA. Per-prompt
failure/diversity/reward/weight go to `attacker_rewards`, in one transaction with the `models` row; the ESS, the
T used, the weights' range and the distinct prompts go to the stage log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from core.config import SparringConfig
from core.errors import StageError
from core.text import normalise
from data import sql
from data.lineage import round_scorer
from data.store import Store
from train.common import collator, fault_callback, labelled, peft_lora_config, prompt_completion_ids
from train.losses import token_log_probs, weighted_nll
from train.novelty import novelty
from train.recipe import Role, train_round, trainer_cli

log = logging.getLogger(__name__)

STAGE = "train_attacker"


# ---------------------------------------------------------------------------------------------------------
# The attacker's reward (pure functions on arrays)


def standardise(x: np.ndarray) -> np.ndarray:
    """z-score over the round; all zeros when the values are equal (no spread, no signal)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std() if x.size else 0.0
    if std < 1e-12:
        return np.zeros_like(x)
    return (x - x.mean()) / std


def failure_scores(mean_reward: np.ndarray) -> np.ndarray:
    """Defender failure, normalised within the round: z-score of −mean reward."""
    return standardise(-np.asarray(mean_reward, dtype=np.float64))


def sample_weights(reward: np.ndarray, temperature: float) -> np.ndarray:
    """N · softmax(reward / T): non-negative, mean 1, order-preserving (higher reward, higher weight)."""
    reward = np.asarray(reward, dtype=np.float64)
    if reward.size == 0:
        return reward
    z = reward / temperature
    e = np.exp(z - z.max())
    return reward.size * e / e.sum()


def effective_sample_size(weight: np.ndarray) -> float:
    """(Σw)² / Σw²: N for equal weights, 1 when one prompt holds all of it (Kish's ESS)."""
    weight = np.asarray(weight, dtype=np.float64)
    total = float((weight**2).sum())
    return float(weight.sum() ** 2 / total) if total > 0 else 0.0


def floored_weights(reward: np.ndarray, temperature: float, ess_floor: float) -> tuple[np.ndarray, float]:
    """`sample_weights` at the smallest T ≥ `temperature` whose ESS is at least `ess_floor` × N (bisection on
    log T: the ESS grows with T towards N); returns the weights and the T used."""
    reward = np.asarray(reward, dtype=np.float64)
    target = ess_floor * reward.size
    if reward.size == 0 or effective_sample_size(sample_weights(reward, temperature)) >= target:
        return sample_weights(reward, temperature), temperature
    low, high = np.log(temperature), np.log(temperature) + 1.0
    while effective_sample_size(sample_weights(reward, float(np.exp(high)))) < target and high < 30:
        low, high = high, high + 1.0
    for _ in range(50):
        mid = (low + high) / 2
        if effective_sample_size(sample_weights(reward, float(np.exp(mid)))) >= target:
            high = mid
        else:
            low = mid
    return sample_weights(reward, float(np.exp(high))), float(np.exp(high))


@dataclass(frozen=True)
class AttackerRewards:
    failure: np.ndarray
    diversity: np.ndarray  # raw novelty in [0, 1]
    reward: np.ndarray
    weight: np.ndarray
    temperature: float  # the T the weights were taken at (>= the configured one)

    @property
    def ess(self) -> float:
        return effective_sample_size(self.weight)


def attacker_rewards(
    mean_reward: np.ndarray,
    texts: list[str],
    diversity_weight: float,
    temperature: float,
    max_n: int = 2,
    *,
    history: Sequence[str] = (),
    ngram_weight: float = 1.0,
    embedding_weight: float = 0.0,
    embedding_model: str = "hashing",
    ess_floor: float = 0.0,
) -> AttackerRewards:
    """GPO's attacker reward for each prompt of a round and its training weight (see the module docstring).

    The defaults (n-grams only, no history, no ESS floor) are the plain within-round reward; the trainer passes
    the config's (GPO's 5:1 n-gram : embedding novelty against history, ESS floor)."""
    failure = failure_scores(mean_reward)
    diversity = (
        novelty(
            texts,
            history,
            max_n=max_n,
            ngram_weight=ngram_weight,
            embedding_weight=embedding_weight,
            embedding_model=embedding_model,
        )
        if diversity_weight > 0
        else np.zeros(len(texts))
    )
    reward = standardise(failure + diversity_weight * standardise(diversity))
    weight, used = floored_weights(reward, temperature, ess_floor)
    return AttackerRewards(failure, diversity, reward, weight, used)


# ---------------------------------------------------------------------------------------------------------
# Training


def _trainer_class() -> type:
    from transformers import Trainer

    class WeightedNLLTrainer(Trainer):
        """A `transformers.Trainer` whose loss is `train.losses.weighted_nll` (per-example weights in the batch)."""

        loss_is_scaled_for_ga = False  # a per-batch mean: let Trainer divide by the accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            logps = token_log_probs(outputs.logits[:, :-1], inputs["input_ids"][:, 1:])
            completion = (inputs["labels"][:, 1:] != -100).long()
            loss = weighted_nll(logps, completion, inputs["weight"])
            return (loss, outputs) if return_outputs else loss

    return WeightedNLLTrainer


@dataclass(frozen=True)
class AttackerData:
    scorer: str
    prompts: pa.Table  # sql.ATTACKER_PROMPTS rows
    rewards: AttackerRewards
    history: int  # earlier prompts novelty was measured against


class AttackerRole(Role):
    """Reward-weighted regression on the attacker's own prompts (see the module docstring)."""

    name = "attacker"
    stage = STAGE

    def settings(self, cfg: SparringConfig) -> Any:
        return cfg.train_attacker

    def read(self, store: Store, cfg: SparringConfig, round_: int) -> AttackerData:
        tcfg = cfg.train_attacker
        scorer = round_scorer(store, round_)
        prompts = store.arrow(sql.ATTACKER_PROMPTS, {"round": round_, "scorer": scorer})
        if prompts.num_rows == 0:
            raise StageError(
                f"round {round_} has 0 scored attacker prompts under scorer '{scorer}'; "
                "expected prompts with an instruction and scored responses"
            )
        history = [r[0] for r in store.execute(sql.EARLIER_PROMPT_TEXTS, [round_])] if tcfg.history else []
        rewards = attacker_rewards(
            prompts.column("mean_reward").to_numpy(),
            prompts.column("text").to_pylist(),
            tcfg.diversity_weight,
            tcfg.weight_temperature,
            tcfg.diversity_ngrams,
            history=history,
            ngram_weight=tcfg.ngram_weight,
            embedding_weight=tcfg.embedding_weight,
            embedding_model=tcfg.embedding_model,
            ess_floor=tcfg.ess_floor,
        )
        return AttackerData(scorer, prompts, rewards, len(history))

    def describe(self, data: AttackerData) -> str:
        w = data.rewards.weight
        return (
            f"{data.prompts.num_rows} prompts (weights {w.min():.2f}..{w.max():.2f}, ESS {data.rewards.ess:.1f}, "
            f"T {data.rewards.temperature:.3g})"
        )

    def trainer(
        self, cfg: SparringConfig, model: Any, tokenizer: Any, data: AttackerData, output_dir: Path
    ) -> Any:
        from datasets import Dataset
        from peft import get_peft_model
        from transformers import TrainingArguments

        tcfg = cfg.train_attacker
        torch.manual_seed(cfg.run.seed)  # the LoRA init
        model = get_peft_model(model, peft_lora_config(tcfg.lora))
        dataset = Dataset(
            pa.table(
                {
                    "instruction": data.prompts.column("instruction"),
                    "text": data.prompts.column("text"),
                    "weight": pa.array(data.rewards.weight, pa.float64()),
                }
            )
        ).map(
            lambda batch: labelled(
                **prompt_completion_ids(tokenizer, batch["instruction"], batch["text"]),
                max_length=tcfg.max_length,
            ),
            batched=True,
            remove_columns=["instruction", "text"],
        )
        args = TrainingArguments(
            output_dir=str(output_dir),
            learning_rate=tcfg.learning_rate,
            num_train_epochs=tcfg.epochs,
            max_steps=tcfg.max_steps,
            per_device_train_batch_size=tcfg.batch_size,
            gradient_accumulation_steps=tcfg.grad_accum,
            bf16=next(model.parameters()).dtype == torch.bfloat16,
            report_to=tcfg.report_to,
            save_steps=tcfg.save_steps,
            save_total_limit=2,
            seed=cfg.run.seed,
            logging_steps=max(1, min(10, tcfg.save_steps)),
            remove_unused_columns=False,
        )
        return _trainer_class()(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collator(tokenizer),
            processing_class=tokenizer,
            callbacks=[fault_callback(STAGE)],
        )

    def details(self, cfg: SparringConfig, data: AttackerData) -> dict[str, Any]:
        tcfg = cfg.train_attacker
        return {
            "prompts": data.prompts.num_rows,
            "scorer": data.scorer,
            "diversity_weight": tcfg.diversity_weight,
            "weight_temperature": tcfg.weight_temperature,
            "diversity_ngrams": tcfg.diversity_ngrams,
            "ngram_weight": tcfg.ngram_weight,
            "embedding_weight": tcfg.embedding_weight,
            "embedding_model": tcfg.embedding_model,
            "history_prompts": data.history,
            "ess": data.rewards.ess,
            "ess_floor": tcfg.ess_floor,
            "temperature_used": data.rewards.temperature,
            "weight_min": float(data.rewards.weight.min()),
            "weight_max": float(data.rewards.weight.max()),
            "distinct_prompts": len({normalise(t) for t in data.prompts.column("text").to_pylist()}),
            "novelty_mean": float(data.rewards.diversity.mean()),
        }

    def record(self, store: Store, round_: int, data: AttackerData, model: pa.Table) -> int:
        store.insert("models", model)
        n = data.prompts.num_rows
        return store.insert(
            "attacker_rewards",
            pa.table(
                {
                    "round": pa.array(np.full(n, round_), pa.int64()),
                    "prompt_id": data.prompts.column("prompt_id"),
                    "failure": data.rewards.failure,
                    "diversity": data.rewards.diversity,
                    "reward": data.rewards.reward,
                    "weight": data.rewards.weight,
                }
            ),
        )


ATTACKER = AttackerRole()


def train_attacker(
    cfg: SparringConfig, round_: int, force: bool = False, drop_later: bool = False
) -> dict[str, Any]:
    """Score, weight, train, save and record round `round_`'s attacker; returns its `models` row."""
    return train_round(ATTACKER, cfg, round_, force, drop_later)


def main() -> None:
    trainer_cli(__doc__ or "", ATTACKER, train_attacker)


if __name__ == "__main__":
    main()
