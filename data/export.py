"""One round of a run as `datasets.Dataset`s: DuckDB -> Arrow -> Dataset, shaped in SQL, no Python row loops.

Three configs per run, one split per round (`round_1`, `round_2`, ...), so `load_dataset(repo, config,
split="round_N")` picks a round and `load_dataset(repo, config)` gives all of them as a `DatasetDict`:

- `defender_dpo`: best-vs-worst pairs (GPO/eva's DPO data) in TRL's conversational preference format:
  `prompt` = [user turn], `chosen`/`rejected` = [assistant turn], plus the rewards and their margin.
- `attacker_sft`: what the attacker was asked (`instruction`) and the prompt it wrote, as a `messages`
  conversation too, with its GPO reward (failure + lambda * z-scored diversity) and training weight. The reward
  columns are NULL until `train_attacker` has filled `attacker_rewards` for the round: the config is always
  there, with the same columns, so a round can be published before the attacker trains and re-pushed after.
- `responses`: every response scored under the round's scorer, for analysis.

The features are declared here, not inferred, so every round's split has the same schema even when a
column is all NULL (the Hub refuses to merge splits of one config with different features).
"""

from __future__ import annotations

import re

import datasets
import pyarrow as pa

from data import sql
from data.store import Store

DEFENDER_DPO = "defender_dpo"
ATTACKER_SFT = "attacker_sft"
RESPONSES = "responses"
CONFIGS = (DEFENDER_DPO, ATTACKER_SFT, RESPONSES)

_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
_STR, _F64, _I32 = datasets.Value("string"), datasets.Value("float64"), datasets.Value("int32")

FEATURES: dict[str, datasets.Features] = {
    DEFENDER_DPO: datasets.Features(
        {
            "prompt": _MESSAGES,
            "chosen": _MESSAGES,
            "rejected": _MESSAGES,
            "prompt_id": _STR,
            "chosen_id": _STR,
            "rejected_id": _STR,
            "chosen_reward": _F64,
            "rejected_reward": _F64,
            "margin": _F64,
            "round": _I32,
        }
    ),
    ATTACKER_SFT: datasets.Features(
        {
            "instruction": _STR,
            "prompt": _STR,
            "messages": _MESSAGES,
            "reward": _F64,
            "weight": _F64,
            "failure": _F64,
            "diversity": _F64,
            "prompt_id": _STR,
            "parent_id": _STR,
            "category": _STR,
            "mode": _STR,
            "attacker_model": _STR,
            "round": _I32,
        }
    ),
    RESPONSES: datasets.Features(
        {
            "prompt": _STR,
            "response": _STR,
            "sample_index": _I32,
            "reward": _F64,
            "scorer": _STR,
            "response_id": _STR,
            "prompt_id": _STR,
            "category": _STR,
            "mode": _STR,
            "finish_reason": _STR,
            "prompt_tokens": _I32,
            "completion_tokens": _I32,
            "attacker_model": _STR,
            "defender_model": _STR,
            "round": _I32,
        }
    ),
}

QUERIES = {
    DEFENDER_DPO: sql.EXPORT_DEFENDER_DPO,
    ATTACKER_SFT: sql.EXPORT_ATTACKER_SFT,
    RESPONSES: sql.EXPORT_RESPONSES,
}

DESCRIPTIONS = {
    DEFENDER_DPO: "preference pairs, best vs worst defender response per prompt (TRL `DPOTrainer` format)",
    ATTACKER_SFT: "the attacker's instruction -> prompt, with its GPO reward and training weight",
    RESPONSES: "every defender response scored by the round's reward model",
}

_SPLIT = re.compile(r"^round_(\d+)$")


def split_name(round_: int) -> str:
    return f"round_{round_}"


def split_round(split: str) -> int | None:
    """The round a split name stands for (`round_3` -> 3), None for splits that are not ours."""
    match = _SPLIT.match(split)
    return int(match.group(1)) if match else None


def export_table(store: Store, config: str, round_: int) -> pa.Table:
    """One config of one round as Arrow, cast to the declared features (column order included)."""
    schema = FEATURES[config].arrow_schema
    table = store.arrow(QUERIES[config], [round_])
    return table.select(schema.names).cast(schema)


def export_dataset(store: Store, config: str, round_: int) -> datasets.Dataset:
    table = export_table(store, config, round_)
    info = datasets.DatasetInfo(features=FEATURES[config], config_name=config)
    return datasets.Dataset(table, info=info, split=datasets.NamedSplit(split_name(round_)))


def export_round(store: Store, round_: int) -> dict[str, datasets.Dataset]:
    """All three configs of a round, keyed by config name."""
    return {config: export_dataset(store, config, round_) for config in CONFIGS}
