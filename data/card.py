"""The dataset card of a published run, generated from what the store holds (distilabel-style: the card
describes what actually ran, not what a config says should have run).

A card is `huggingface_hub.DatasetCard`: YAML metadata (licence, tags, `configs:` so that
`load_dataset(repo, "defender_dpo", split="round_1")` resolves, and `dataset_info:` with the features) and a
Markdown body: how to load it, the configs, per-round players and counts, reward statistics, the selection
rule, the models and their lineage, and the exact config each round ran with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import CardData, DatasetCard, DatasetCardData

from data import sql
from data.export import CONFIGS, DEFENDER_DPO, DESCRIPTIONS, split_name, split_round
from data.store import Store

TEMPLATE = Path(__file__).with_name("card_template.md")
TAGS = ["sparring", "self-play", "red-teaming", "preference", "dpo", "synthetic"]


@dataclass(frozen=True)
class RoundFacts:
    """One row of `sql.CARD_ROUNDS`: who played a round, what it produced and how rewards fell."""

    round: int
    attacker_model: str
    defender_model: str
    scorer: str
    config: dict[str, Any]
    started_at: str
    prompts: int
    attacker_prompts: int
    responses: int
    scored: int
    hard_prompts: int
    pairs: int
    attacker_rewards: int
    reward_mean: float | None
    reward_std: float | None
    reward_min: float | None
    reward_max: float | None
    margin_mean: float | None
    chosen_mean: float | None
    rejected_mean: float | None
    attacker_reward_mean: float | None
    select_details: dict[str, Any] = field(default_factory=dict)
    stage_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each stage ran with


@dataclass(frozen=True)
class ModelFacts:
    """A model trained on round `round`'s data (it plays round `round + 1`)."""

    round: int
    role: str
    path: str
    parent: str
    created_at: str


@dataclass(frozen=True)
class RunFacts:
    run_dir: str
    rounds: dict[int, RoundFacts]
    models: list[ModelFacts]


def run_facts(store: Store, run_dir: str) -> RunFacts:
    """Everything the card says, read in three queries so the store can be closed before any upload."""
    configs: dict[int, dict[str, dict[str, Any]]] = {}
    for row in store.rows(sql.CARD_STAGE_CONFIGS):
        config = json.loads(row["details"] or "{}").get("config")
        if config:
            configs.setdefault(row["round"], {})[row["stage"]] = config
    rounds = {}
    for row in store.rows(sql.CARD_ROUNDS):
        row["config"] = json.loads(row.pop("config_json"))
        row["select_details"] = json.loads(row["select_details"]) if row["select_details"] else {}
        rounds[row["round"]] = RoundFacts(**row, stage_configs=configs.get(row["round"], {}))
    models = [ModelFacts(**row) for row in store.rows(sql.CARD_MODELS)]
    return RunFacts(run_dir, rounds, models)


# ---- YAML metadata --------------------------------------------------------------------------------------


def configs_metadata(splits: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
    """The `configs:` YAML block in the layout `Dataset.push_to_hub` writes: `<config>/<split>-*.parquet`.

    `defender_dpo` is the default config, so `load_dataset(repo, split="round_1")` gives DPO pairs.
    """
    out = []
    for config in sorted(splits, key=lambda c: (CONFIGS.index(c) if c in CONFIGS else len(CONFIGS), c)):
        entry: dict[str, Any] = {"config_name": config}
        if config == DEFENDER_DPO:
            entry["default"] = True
        entry["data_files"] = [
            {"split": split, "path": f"{config}/{split}-*"}
            for split in sorted(set(splits[config]), key=_split_key)
        ]
        out.append(entry)
    return out


def splits_from_metadata(card_data: CardData | None) -> dict[str, list[str]]:
    """Which splits each config has, read from a card's `configs:` block (what a previous push left)."""
    splits: dict[str, list[str]] = {}
    for entry in (card_data.get("configs") if card_data is not None else None) or []:
        files = entry.get("data_files") or []
        names = [f["split"] for f in files if isinstance(f, dict) and "split" in f]
        splits.setdefault(entry["config_name"], []).extend(names)
    return splits


def dataset_info_metadata(
    card_data: CardData | None,
    exported: Mapping[str, datasets.Dataset],
    split: str,
    download_sizes: Mapping[str, int],
) -> Any:
    """The `dataset_info:` block with `split` of each exported config replaced, the other splits kept.

    This is what `Dataset.push_to_hub` writes on the Hub; computed here for `--to-dir`, which has no Hub to
    do it. `download_sizes` are each config's parquet bytes over all its splits.
    """
    infos = (
        DatasetInfosDict.from_dataset_card_data(card_data) if card_data is not None else DatasetInfosDict()
    )
    for config, ds in exported.items():
        info = infos.get(config) or datasets.DatasetInfo(config_name=config)
        info.config_name = config
        info.features = ds.features
        splits = info.splits or datasets.SplitDict()
        splits[split] = datasets.SplitInfo(name=split, num_bytes=ds.data.nbytes, num_examples=len(ds))
        info.splits = splits
        info.download_size = download_sizes[config]
        info.dataset_size = sum(s.num_bytes for s in splits.values())
        infos[config] = info
    data = DatasetCardData()
    infos.to_dataset_card_data(data)
    return data.get("dataset_info")


# ---- the card -------------------------------------------------------------------------------------------


def build_card(
    facts: RunFacts,
    splits: Mapping[str, Iterable[str]],
    *,
    source: str,
    license: str,
    dataset_info: Any = None,
    extra_configs: Iterable[dict[str, Any]] = (),
) -> DatasetCard:
    """The card for a repo (or `--to-dir` folder) holding `splits` of each config.

    `source` is what users pass to `load_dataset` (the repo id, or the folder). Rounds named by a split
    but missing from this store (pushed from another run) are listed as such, not invented.
    """
    by_config = {c: sorted(set(s), key=_split_key) for c, s in splits.items()}
    published = sorted({r for s in by_config.values() for r in map(split_round, s) if r is not None})
    rounds = [facts.rounds[r] for r in published if r in facts.rounds]
    missing = [r for r in published if r not in facts.rounds]
    data = DatasetCardData(
        license=license,
        pretty_name=f"Sparring self-play data ({source.rstrip('/').split('/')[-1]})",
        tags=TAGS,
        task_categories=["text-generation"],
        language=["en"],
        size_categories=[_size_category(sum(r.scored for r in rounds))],
        configs=[*configs_metadata(by_config), *extra_configs],
    )
    if dataset_info is not None:
        data["dataset_info"] = dataset_info
    return _render(
        data,
        rounds,
        source=source,
        run_dir=facts.run_dir,
        first_split=split_name(rounds[0].round) if rounds else "round_1",
        configs_table=[
            {
                "name": config,
                "rows": ", ".join(str(_rows(config, r)) for r in rounds) or "-",
                "splits": ", ".join(f"`{s}`" for s in by_config.get(config, [])) or "-",
                "what": DESCRIPTIONS[config],
            }
            for config in CONFIGS
        ],
        without_attacker_rewards=", ".join(str(r.round) for r in rounds if r.attacker_rewards == 0),
        missing=", ".join(map(str, missing)),
        trained=[m for m in facts.models if m.round in {r.round for r in rounds}],
        license=license,
    )


def _render(data: DatasetCardData, rounds: list[RoundFacts], **values: Any) -> DatasetCard:
    """`DatasetCard.from_template` with our Jinja file; numbers and each round's config are formatted here."""
    shown = []
    for r in rounds:
        select = r.config.get("select", {})
        shown.append(
            {
                **asdict(r),
                **{k: _num(getattr(r, k)) for k in _NUMBERS},
                "strategy": r.select_details.get("strategy", select.get("strategy")),
                "hard_fraction": select.get("hard_fraction"),
                "margin": r.select_details.get("margin", select.get("margin")),
                "config_yaml": yaml.safe_dump(r.config, sort_keys=True).rstrip(),
                "stages": [
                    (stage, ", ".join(f"`{k}={json.dumps(v)}`" for k, v in sorted(values.items())))
                    for stage, values in r.stage_configs.items()
                ],
            }
        )
    return DatasetCard.from_template(data, template_path=str(TEMPLATE), rounds=shown, **values)


_NUMBERS = (
    "reward_mean",
    "reward_std",
    "reward_min",
    "reward_max",
    "chosen_mean",
    "rejected_mean",
    "margin_mean",
    "attacker_reward_mean",
)


def _rows(config: str, r: RoundFacts) -> int:
    """Rows a round contributes to a config."""
    return {DEFENDER_DPO: r.pairs, "attacker_sft": r.attacker_prompts, "responses": r.scored}[config]


def _num(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _split_key(split: str) -> tuple[int, str]:
    r = split_round(split)
    return (r if r is not None else 1 << 30, split)


def _size_category(n: int) -> str:
    """The Hub's size buckets (by rows of the largest config, the responses)."""
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"
