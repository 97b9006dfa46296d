"""`python -m train.attacker --round N`: reward-weighted fine-tuning of the attacker on its own round-N prompts.

GPO (Zheng et al., arXiv 2406.10977) trains its attacker with PPO on reward = P(unsafe) − diversity penalties
against earlier attacks. Sparring keeps that reward and replaces PPO by one offline, reward-weighted
regression step per round:

    failure_i   = z-score over the round of ( −mean defender reward on prompt i )
    diversity_i = 1 − max_{j≠i} Jaccard(ngrams_i, ngrams_j)      word 1..n-grams, n = train_attacker.diversity_ngrams
    reward_i    = failure_i + λ · z-score over the round of diversity_i      λ = train_attacker.diversity_weight
    w_i         = N · softmax(reward / T)_i                        T = train_attacker.weight_temperature

Both terms are standardised within the round so λ is their relative weight whatever the scales: raw diversity
spans only ~0.1 within a round while failure has std 1, and with λ applied to the raw term the toy world's
λ = 0, 1 and 5 attackers came out the same (README, "Toy world"). The stored `diversity` is the raw 1 − Jaccard,
which is what a reader can interpret.

(GPO measures diversity with SelfBLEU over 2–5-grams plus sentence-embedding cosine against a buffer of past
attacks; the n-gram Jaccard over the round is a cheap, dependency-free stand-in for the SelfBLEU part.) The
weights are non-negative with mean 1, so the loss keeps the scale of an ordinary NLL; T → ∞ gives plain SFT on
all prompts, small T trains on the best few — and, over rounds, can collapse the attacker onto them whatever λ
is (README, "Toy world" (d)). The loss is `train.losses.weighted_nll` on the tokens of the prompt
the attacker wrote, given the instruction it was asked (the exact chat vLLM generated from), with a fresh LoRA.
Per-prompt failure/diversity/reward/weight go to `attacker_rewards`, in one transaction with the `models` row.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from core.config import SparringConfig
from core.errors import StageError
from core.text import ngram_set
from data import sql
from data.store import Store
from train.common import collator, fault_callback, labelled, peft_lora_config, prompt_completion_ids
from train.losses import token_log_probs, weighted_nll
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


def diversity_scores(texts: list[str], max_n: int = 2) -> np.ndarray:
    """1 − the largest n-gram Jaccard similarity to any other prompt of the round (1 = shares nothing).

    One sparse prompt × n-gram matrix A; intersections are A·Aᵀ, unions |a| + |b| − intersection.
    """
    n = len(texts)
    if n < 2:
        return np.ones(n)
    grams = [ngram_set(t, max_n) for t in texts]
    vocab: dict[tuple[str, ...], int] = {}
    rows = [i for i, g in enumerate(grams) for _ in g]
    cols = [vocab.setdefault(x, len(vocab)) for g in grams for x in g]
    with warnings.catch_warnings():  # torch flags its sparse kernels as beta; they are exact for this product
        warnings.simplefilter("ignore", UserWarning)
        a = torch.sparse_coo_tensor(
            torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
            torch.ones(len(rows)),
            (n, max(1, len(vocab))),
        ).coalesce()
        inter = torch.sparse.mm(a, a.t()).to_dense().double()
    sizes = torch.tensor([len(g) for g in grams], dtype=torch.float64)
    union = sizes[:, None] + sizes[None, :] - inter
    jaccard = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    jaccard.fill_diagonal_(-1.0)
    return (1.0 - jaccard.max(dim=1).values).numpy()


def sample_weights(reward: np.ndarray, temperature: float) -> np.ndarray:
    """N · softmax(reward / T): non-negative, mean 1, order-preserving (higher reward, higher weight)."""
    reward = np.asarray(reward, dtype=np.float64)
    if reward.size == 0:
        return reward
    z = reward / temperature
    e = np.exp(z - z.max())
    return reward.size * e / e.sum()


@dataclass(frozen=True)
class AttackerRewards:
    failure: np.ndarray
    diversity: np.ndarray
    reward: np.ndarray
    weight: np.ndarray


def attacker_rewards(
    mean_reward: np.ndarray, texts: list[str], diversity_weight: float, temperature: float, max_n: int = 2
) -> AttackerRewards:
    """GPO's attacker reward for each prompt of a round and its training weight (see the module docstring)."""
    failure = failure_scores(mean_reward)
    diversity = diversity_scores(texts, max_n)
    reward = failure + diversity_weight * standardise(diversity)
    return AttackerRewards(failure, diversity, reward, sample_weights(reward, temperature))


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


class AttackerRole(Role):
    """Reward-weighted regression on the attacker's own prompts (see the module docstring)."""

    name = "attacker"
    stage = STAGE

    def settings(self, cfg: SparringConfig) -> Any:
        return cfg.train_attacker

    def read(self, store: Store, cfg: SparringConfig, round_: int) -> AttackerData:
        tcfg = cfg.train_attacker
        scorer = _round_scorer(store, round_)
        prompts = store.arrow(sql.ATTACKER_PROMPTS, {"round": round_, "scorer": scorer})
        if prompts.num_rows == 0:
            raise StageError(
                f"round {round_} has 0 scored attacker prompts under scorer '{scorer}'; "
                "expected prompts with an instruction and scored responses"
            )
        rewards = attacker_rewards(
            prompts.column("mean_reward").to_numpy(),
            prompts.column("text").to_pylist(),
            tcfg.diversity_weight,
            tcfg.weight_temperature,
            tcfg.diversity_ngrams,
        )
        return AttackerData(scorer, prompts, rewards)

    def describe(self, data: AttackerData) -> str:
        w = data.rewards.weight
        return f"{data.prompts.num_rows} prompts (weights {w.min():.2f}..{w.max():.2f})"

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


def train_attacker(cfg: SparringConfig, round_: int, force: bool = False) -> dict[str, Any]:
    """Score, weight, train, save and record round `round_`'s attacker; returns its `models` row."""
    return train_round(ATTACKER, cfg, round_, force)


def _round_scorer(store: Store, round_: int) -> str:
    """The scorer the round was played with (recorded when it began), else the only one its scores use."""
    info = store.round_info(round_)
    if info is not None:
        return str(info["scorer"])
    scorers = [r["scorer"] for r in store.rows(sql.ROUND_SCORERS, [round_])]
    if len(scorers) != 1:
        raise StageError(
            f"round {round_} has scores from {len(scorers)} scorers ({', '.join(scorers) or 'none'}) and no "
            "recorded round scorer; expected exactly one"
        )
    return scorers[0]


def main() -> None:
    trainer_cli(__doc__ or "", "attacker", train_attacker)


if __name__ == "__main__":
    main()
