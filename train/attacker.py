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
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from data import sql
from data.config import SparringConfig
from data.errors import StageError
from data.prompts import normalise
from data.store import Store
from train.common import (
    already_trained,
    fault_callback,
    forget_trained,
    last_checkpoint,
    launch_state,
    load_policy,
    lora_details,
    model_paths,
    model_row,
    parent_model,
    peft_lora_config,
    prompt_completion_ids,
    save_trained,
    store_for_reading,
    stored_model,
    trainer_cli,
    use_bf16,
)
from train.losses import token_log_probs, weighted_nll

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


def word_ngrams(text: str, max_n: int) -> set[tuple[str, ...]]:
    """Word 1..max_n-grams of the normalised text (case, punctuation and spacing ignored)."""
    words = normalise(text).split()
    return {tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)}


def diversity_scores(texts: list[str], max_n: int = 2) -> np.ndarray:
    """1 − the largest n-gram Jaccard similarity to any other prompt of the round (1 = shares nothing).

    One sparse prompt × n-gram matrix A; intersections are A·Aᵀ, unions |a| + |b| − intersection.
    """
    n = len(texts)
    if n < 2:
        return np.ones(n)
    grams = [word_ngrams(t, max_n) for t in texts]
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


def _collate(pad_id: int, max_length: int):
    """Pads [instruction; prompt] token rows; `completion_mask` marks the prompt tokens the loss is taken on."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [(r["prompt_ids"] + r["completion_ids"])[:max_length] for r in rows]
        masks = [([0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"]))[:max_length] for r in rows]
        width = max(len(s) for s in seqs)
        batch = {
            "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "completion_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "weight": torch.tensor([r["weight"] for r in rows], dtype=torch.float32),
        }
        for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
            batch["input_ids"][i, : len(s)] = torch.tensor(s)
            batch["attention_mask"][i, : len(s)] = 1
            batch["completion_mask"][i, : len(m)] = torch.tensor(m)
        return batch

    return collate


def _trainer_class() -> type:
    from transformers import Trainer

    class WeightedNLLTrainer(Trainer):
        """A `transformers.Trainer` whose loss is `train.losses.weighted_nll` (per-example weights in the batch)."""

        loss_is_scaled_for_ga = False  # a per-batch mean: let Trainer divide by the accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            logps = token_log_probs(outputs.logits[:, :-1], inputs["input_ids"][:, 1:])
            loss = weighted_nll(logps, inputs["completion_mask"][:, 1:], inputs["weight"])
            return (loss, outputs) if return_outputs else loss

    return WeightedNLLTrainer


def train_attacker(cfg: SparringConfig, round_: int, force: bool = False) -> dict[str, Any]:
    """Score, weight, train, save and record round `round_`'s attacker; returns its `models` row."""
    tcfg = cfg.train_attacker
    if round_ < 1:
        raise StageError(f"--round {round_} is not a round; expected an integer >= 1")
    paths = model_paths(cfg, round_, "attacker")
    state = launch_state()
    with store_for_reading(cfg, state) as store:
        if already_trained(store, round_, STAGE, force):
            return stored_model(store, round_, "attacker")
        scorer = _round_scorer(store, round_)
        prompts = store.arrow(sql.ATTACKER_PROMPTS, {"round": round_, "scorer": scorer})
        if prompts.num_rows == 0:
            raise StageError(
                f"round {round_} has 0 scored attacker prompts under scorer '{scorer}'; "
                "expected prompts with an instruction and scored responses"
            )
        if force:
            forget_trained(store, state, round_, STAGE, paths)
        parent = parent_model(store, cfg, "attacker", round_, tcfg.start_from)

    started = time.perf_counter()
    texts = prompts.column("text").to_pylist()
    rewards = attacker_rewards(
        prompts.column("mean_reward").to_numpy(),
        texts,
        tcfg.diversity_weight,
        tcfg.weight_temperature,
        tcfg.diversity_ngrams,
    )
    log.info(
        "round %d: training the attacker from %s on %d prompts (weights %.2f..%.2f)",
        round_,
        parent,
        prompts.num_rows,
        rewards.weight.min(),
        rewards.weight.max(),
    )
    metrics = _fit(cfg, parent, prompts, rewards, paths)
    if not state.is_main_process:
        return {}  # under `accelerate launch`, the main process saves and records the model
    reward_rows = pa.table(
        {
            "round": pa.array(np.full(prompts.num_rows, round_), pa.int64()),
            "prompt_id": prompts.column("prompt_id"),
            "failure": rewards.failure,
            "diversity": rewards.diversity,
            "reward": rewards.reward,
            "weight": rewards.weight,
        }
    )
    details = {
        "prompts": prompts.num_rows,
        "scorer": scorer,
        "diversity_weight": tcfg.diversity_weight,
        "weight_temperature": tcfg.weight_temperature,
        "diversity_ngrams": tcfg.diversity_ngrams,
        "start_from": tcfg.start_from,
        "lora": lora_details(tcfg.lora),
        **metrics,
    }
    with Store.for_run(cfg.run.dir) as store:
        with store.stage(round_, STAGE, started) as result:
            result.rows = store.insert("attacker_rewards", reward_rows)
            store.insert("models", model_row(round_, "attacker", paths, parent, details))
            result.details = {"parent": parent, "path": str(paths.merged), **details}
        row = stored_model(store, round_, "attacker")
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    return row


def _fit(
    cfg: SparringConfig, parent: str, prompts: pa.Table, rewards: AttackerRewards, paths: Any
) -> dict[str, Any]:
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import TrainingArguments

    tcfg = cfg.train_attacker
    bf16 = use_bf16(tcfg.bf16)
    model, tokenizer = load_policy(parent, bf16)
    torch.manual_seed(cfg.run.seed)  # the LoRA init
    model = get_peft_model(model, peft_lora_config(tcfg.lora))
    dataset = Dataset(
        pa.table(
            {
                "instruction": prompts.column("instruction"),
                "text": prompts.column("text"),
                "weight": pa.array(rewards.weight, pa.float64()),
            }
        )
    ).map(
        lambda batch: prompt_completion_ids(tokenizer, batch["instruction"], batch["text"]),
        batched=True,
        remove_columns=["instruction", "text"],
    )
    args = TrainingArguments(
        output_dir=str(paths.checkpoints),
        learning_rate=tcfg.learning_rate,
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps,
        per_device_train_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        bf16=bf16,
        report_to=tcfg.report_to,
        save_steps=tcfg.save_steps,
        save_total_limit=2,
        seed=cfg.run.seed,
        logging_steps=max(1, min(10, tcfg.save_steps)),
        remove_unused_columns=False,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=_collate(tokenizer.pad_token_id, tcfg.max_length),
        processing_class=tokenizer,
        callbacks=[fault_callback(STAGE)],
    )
    resume = last_checkpoint(paths.checkpoints)
    if resume:
        log.info("resuming from %s", resume)
    output = trainer.train(resume_from_checkpoint=resume)
    if trainer.accelerator.is_main_process:
        save_trained(trainer.model, tokenizer, paths)
    return {
        "steps": trainer.state.global_step,
        "train_loss": output.training_loss,
        "processes": trainer.accelerator.num_processes,
    }


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
