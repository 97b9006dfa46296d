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
from dataclasses import dataclass, field
from typing import Any

import datasets
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import CardData, DatasetCard, DatasetCardData

from data import sql
from data.export import CONFIGS, DEFENDER_DPO, DESCRIPTIONS, split_name, split_round
from data.store import Store

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
    """Everything the card says, read in two queries so the store can be closed before any upload."""
    rounds = {}
    for row in store.rows(sql.CARD_ROUNDS):
        row["config"] = json.loads(row.pop("config_json"))
        row["select_details"] = json.loads(row["select_details"]) if row["select_details"] else {}
        rounds[row["round"]] = RoundFacts(**row)
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
    body = _body(facts, rounds, missing, by_config, source, license)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _body(
    facts: RunFacts,
    rounds: list[RoundFacts],
    missing: list[int],
    splits: Mapping[str, list[str]],
    source: str,
    license: str,
) -> str:
    first = split_name(rounds[0].round) if rounds else "round_1"
    lines = [
        f"# Sparring self-play data: `{source}`",
        "",
        "Data from a two-player self-play game for aligning language models: an **attacker** model writes "
        "prompts, a **defender** model answers each prompt several times, a **reward model** scores every "
        "answer, and SQL selects preference pairs (best vs worst answer) for the defender and hard prompts "
        "for the next round (GPO, arXiv 2406.10977; eva, arXiv 2411.00062). One split per round.",
        "",
        f"Generated by `python -m data.push` from the run store in `{facts.run_dir}`.",
        "",
        "## How to load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'pairs = load_dataset("{source}", "defender_dpo", split="{first}")  # one round',
        f'every_round = load_dataset("{source}", "defender_dpo")  # DatasetDict: round_1, round_2, ...',
        f'attacker = load_dataset("{source}", "attacker_sft", split="{first}")',
        f'responses = load_dataset("{source}", "responses", split="{first}")',
        "```",
        "",
        "`defender_dpo` is in TRL's conversational preference format and trains `DPOTrainer` as is:",
        "",
        "```python",
        "from trl import DPOConfig, DPOTrainer",
        "",
        'trainer = DPOTrainer(model="<your model>", args=DPOConfig(output_dir="dpo"), train_dataset=pairs)',
        "trainer.train()",
        "```",
        "",
        "## Configs",
        "",
        "| config | rows per round | splits | what |",
        "|---|---|---|---|",
    ]
    for config in CONFIGS:
        counts = {
            DEFENDER_DPO: lambda r: r.pairs,
            "attacker_sft": lambda r: r.attacker_prompts,
            "responses": lambda r: r.scored,
        }[config]
        per_round = ", ".join(f"{counts(r)}" for r in rounds) or "-"
        names = ", ".join(f"`{s}`" for s in splits.get(config, [])) or "-"
        lines.append(f"| `{config}` | {per_round} | {names} | {DESCRIPTIONS[config]} |")
    if any(r.attacker_rewards == 0 for r in rounds):
        without = ", ".join(str(r.round) for r in rounds if r.attacker_rewards == 0)
        lines += [
            "",
            f"In `attacker_sft`, round(s) {without} have no attacker reward yet (`reward`, `weight`, `failure`, "
            "`diversity` are null): the attacker had not been trained on them when this was published.",
        ]
    lines += [
        "",
        "## Rounds",
        "",
        "| round | attacker | defender | scorer | prompts | responses | scored | hard prompts | pairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r.round} | `{r.attacker_model}` | `{r.defender_model}` | `{r.scorer}` | {r.prompts} | "
            f"{r.responses} | {r.scored} | {r.hard_prompts} | {r.pairs} |"
        )
    if missing:
        lines += [
            "",
            f"Round(s) {', '.join(map(str, missing))} are in this repo but not in the run store above.",
        ]
    lines += [
        "",
        "## Reward statistics",
        "",
        "Defender rewards under each round's scorer, and the pairs selected from them.",
        "",
        "| round | scored | mean | std | min | max | pairs | mean chosen | mean rejected | mean margin "
        "| mean attacker reward |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        cells = [r.reward_mean, r.reward_std, r.reward_min, r.reward_max]
        pair_cells = [r.chosen_mean, r.rejected_mean, r.margin_mean, r.attacker_reward_mean]
        lines.append(
            f"| {r.round} | {r.scored} | {' | '.join(map(_num, cells))} | {r.pairs} | "
            f"{' | '.join(map(_num, pair_cells))} |"
        )
    lines += ["", "## Selection rule", ""]
    lines += [
        "- **Pairs** (`defender_dpo`): for each prompt, the highest-reward response is `chosen` and the "
        "lowest-reward one `rejected` (ties broken by sample index); a pair is kept only when chosen beats "
        "rejected strictly and by at least the margin below.",
        "- **Hard prompts** (the parents of the next round's attacks): the top `ceil(hard_fraction x prompts)` "
        "prompts, by lowest mean reward (strategy `gpo`) or by largest max - min reward gap (strategy `eva`).",
        "",
        "| round | strategy | hard fraction | margin | hard prompts | pairs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        select = r.config.get("select", {})
        strategy = r.select_details.get("strategy", select.get("strategy"))
        margin = r.select_details.get("margin", select.get("margin"))
        lines.append(
            f"| {r.round} | `{strategy}` | {select.get('hard_fraction')} | {margin} | {r.hard_prompts} | {r.pairs} |"
        )
    lines += [
        "",
        "## Models and lineage",
        "",
        "Round r is played by the newest models trained on a round before r (or the base models).",
        "",
        "| round | attacker | defender | reward model |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.round} | `{r.attacker_model}` | `{r.defender_model}` | `{r.scorer}` |" for r in rounds]
    trained = [m for m in facts.models if m.round in {r.round for r in rounds}]
    if trained:
        lines += [
            "",
            "Models trained on these rounds:",
            "",
            "| trained on round | role | model | trained from |",
            "|---|---|---|---|",
        ]
        lines += [f"| {m.round} | {m.role} | `{m.path}` | `{m.parent}` |" for m in trained]
    lines += [
        "",
        "## Config",
        "",
        "The full config each round ran with (`rounds.config_json` in the store).",
        "",
    ]
    for r in rounds:
        lines += [
            f"<details><summary>round {r.round} (started {r.started_at})</summary>",
            "",
            "```yaml",
            yaml.safe_dump(r.config, sort_keys=True).rstrip(),
            "```",
            "",
            "</details>",
            "",
        ]
    lines += [
        "## Licence",
        "",
        f"The dataset is released under `{license}`. Its text was generated by the models listed above; "
        "their own licences and terms may also apply.",
        "",
    ]
    return "\n".join(lines)


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
