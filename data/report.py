"""`python -m data.report --run DIR`: Markdown + PNG report of a run, or of the arms of an experiment.

Reads only the run stores: reward distributions per round, attack success per round (responses whose reward is
below `FAIL_BELOW`), prompt diversity per round (distinct-2 and mean pairwise 1−Jaccard over the round's
prompts), pairs and margins. DIR is either one run (holding `sparring.duckdb`) or an experiment
(`DIR/<arm>/seed-<s>/sparring.duckdb`); arms are summarised as mean ± standard deviation over seeds.

An experiment adds its own measurements, columns, sections and figures through a `ReportExtension`
(`toy.report` is one), so this module knows nothing of any world.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import StoreError
from core.text import distinct_ngrams, mean_pairwise_distance
from data import sql
from data.store import STORE_FILE, Store

log = logging.getLogger(__name__)

FAIL_BELOW = 0.0  # a response whose reward is below this is a defender failure (an attack success)


@dataclass
class RunMetrics:
    """Everything the report shows about one run, keyed by round; `extra` holds an extension's measurements."""

    arm: str
    path: Path
    rewards: dict[int, list[float]] = field(default_factory=dict)
    attack_success: dict[int, float] = field(default_factory=dict)
    prompts: dict[int, int] = field(
        default_factory=dict
    )  # stored (de-duplicated); fewer than asked = collapse
    asked: dict[int, int] = field(default_factory=dict)  # attacker.num_prompts of the round's config
    distinct2: dict[int, float] = field(default_factory=dict)
    pairwise: dict[int, float] = field(default_factory=dict)
    pairs: dict[int, int] = field(default_factory=dict)
    margins: dict[int, list[float]] = field(default_factory=dict)
    pair_yield: dict[int, float] = field(default_factory=dict)  # hard prompts with a pair / hard prompts
    resampled: dict[int, int] = field(default_factory=dict)  # extra answers the resample stage spent
    carried_over: set[int] = field(default_factory=set)  # rounds whose defender was not trained (no pair)
    extra: dict[str, Any] = field(default_factory=dict)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def fail_rate(rewards: list[float]) -> float:
    return mean([1.0 if r < FAIL_BELOW else 0.0 for r in rewards])


def run_metrics(path: Path, arm: str = "run") -> RunMetrics:
    """Compute a run's metrics from its store (read-only)."""
    m = RunMetrics(arm, path)
    with Store.for_run(path, read_only=True) as store:
        responses = store.rows(sql.REPORT_RESPONSES)
        prompts = store.rows(sql.REPORT_PROMPTS)
        pairs = store.rows(sql.REPORT_PAIRS)
        stages = store.rows(sql.REPORT_STAGE_DETAILS)
        configs = store.rows(sql.REPORT_ROUNDS)
    for row in configs:
        asked = json.loads(row["config_json"]).get("attacker", {}).get("num_prompts")
        if asked:
            m.asked[row["round"]] = int(asked)
    for row in stages:
        details = json.loads(row["details"] or "{}")
        if row["stage"] == "select" and details.get("pair_yield") is not None:
            m.pair_yield[row["round"]] = details["pair_yield"]
        elif row["stage"] == "resample":
            m.resampled[row["round"]] = int(details.get("extra_samples", 0))
        elif row["stage"] == "train_defender" and details.get("carried_over"):
            m.carried_over.add(row["round"])
    by_round: dict[int, list[float]] = defaultdict(list)
    for r in responses:
        by_round[r["round"]].append(r["reward"])
    for round_, rewards in sorted(by_round.items()):
        m.rewards[round_] = rewards
        m.attack_success[round_] = fail_rate(rewards)
    texts: dict[int, list[str]] = defaultdict(list)
    for p in prompts:
        texts[p["round"]].append(p["text"])
    for round_, ts in sorted(texts.items()):
        m.prompts[round_] = len(ts)
        m.distinct2[round_] = distinct_ngrams(ts, 2)
        m.pairwise[round_] = mean_pairwise_distance(ts, 2)
    for p in pairs:
        m.margins.setdefault(p["round"], []).append(p["margin"])
    m.pairs = {r: len(v) for r, v in m.margins.items()}
    return m


def distinct_share(m: RunMetrics) -> dict[int, float]:
    """Per round: distinct prompts stored / prompts the attacker was asked for (1 = no collapse)."""
    return {k: m.prompts[k] / m.asked[k] for k in m.prompts if m.asked.get(k)}


def find_runs(root: Path) -> dict[str, list[Path]]:
    """arm -> run dirs: DIR itself if it is a run, else DIR/<arm>/seed-*/."""
    if (root / STORE_FILE).is_file():
        return {"run": [root]}
    arms: dict[str, list[Path]] = {}
    for store in sorted(root.glob(f"*/seed-*/{STORE_FILE}")):
        arms.setdefault(store.parent.parent.name, []).append(store.parent)
    return arms


# ---------------------------------------------------------------------------------------------------------
# Summaries over seeds


def stat(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float]) -> str:
    mean_, std = stat(values)
    return "–" if mean_ != mean_ else f"{mean_:.3f} ± {std:.3f}"


def per_round(runs: list[RunMetrics], attr: str) -> dict[int, list[float]]:
    """round -> the values of `attr` (a RunMetrics field, or a key of `extra`) over runs."""
    out: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        values = getattr(r, attr) if hasattr(r, attr) else r.extra.get(attr, {})
        for round_, v in values.items():
            out[round_].append(v)
    return dict(sorted(out.items()))


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no runs)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Figures


class Figures:
    """Saves matplotlib figures under `out` and remembers (file, caption) for the Markdown."""

    def __init__(self, out: Path, arms: list[str]):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.out = out
        self.arms = arms
        self.saved: list[tuple[str, str]] = []

    def save(self, fig: Any, name: str, caption: str, integer_rounds: bool = True) -> None:
        from matplotlib.ticker import MaxNLocator

        for ax in fig.axes if integer_rounds else ():
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=90)
        self.plt.close(fig)
        self.saved.append((name, caption))

    def lines(
        self, metrics: dict[str, list[RunMetrics]], attr: str, name: str, ylabel: str, caption: str
    ) -> None:
        """One line per arm of a per-round metric, mean ± std over seeds."""
        fig, ax = self.plt.subplots(figsize=(5.5, 3.4))
        for arm in self.arms:
            per = per_round(metrics[arm], attr)
            if not per:
                continue
            stats = [stat(v) for v in per.values()]
            ax.errorbar(
                list(per), [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, label=arm
            )
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        self.save(fig, name, caption)


def _plots(metrics: dict[str, list[RunMetrics]], figures: Figures) -> None:
    plt, arms = figures.plt, figures.arms
    n = len(arms)
    # rewards per round (pooled over seeds)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], arms, strict=True):
        pooled: dict[int, list[float]] = defaultdict(list)
        for r in metrics[arm]:
            for round_, v in r.rewards.items():
                pooled[round_] += v
        if pooled:
            ax.boxplot([pooled[k] for k in sorted(pooled)], tick_labels=[str(k) for k in sorted(pooled)])
        ax.set_title(arm)
        ax.set_xlabel("round")
    axes[0][0].set_ylabel("defender reward")
    figures.save(
        fig, "rewards.png", "Defender reward on each round's prompts, all seeds pooled.", integer_rounds=False
    )
    figures.lines(metrics, "distinct2", "diversity.png", "distinct-2 of the round's prompts",
                  "Prompt diversity per round (distinct word bigrams / all bigrams), mean ± std over seeds.")  # fmt: skip

    # pairs and margins
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm in arms:
        per = per_round(metrics[arm], "pairs")
        axes[0].plot(list(per), [stat([float(x) for x in v])[0] for v in per.values()], marker="o", label=arm)
        margins: dict[int, list[float]] = defaultdict(list)
        for r in metrics[arm]:
            for k, v in r.margins.items():
                margins[k] += v
        axes[1].plot(sorted(margins), [mean(margins[k]) for k in sorted(margins)], marker="o", label=arm)
    axes[0].set_ylabel("pairs per round")
    axes[1].set_ylabel("mean margin (chosen − rejected)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.legend(fontsize=7)
    figures.save(
        fig, "pairs.png", "Preference pairs per round (mean over seeds) and their mean reward margin."
    )


# ---------------------------------------------------------------------------------------------------------
# The report


class ReportExtension:
    """What an experiment adds to the report; every method defaults to adding nothing."""

    def measure(self, path: Path, metrics: RunMetrics) -> None:
        """Fill `metrics.extra` for the run at `path`."""

    def rounds(self, metrics: RunMetrics) -> Iterable[int]:
        """Rounds beyond those played that the per-round table should show (e.g. a final evaluation)."""
        return ()

    def summary(self, runs: list[RunMetrics]) -> dict[str, str]:
        """Columns of the comparison table, after `arm` and `seeds`."""
        return {}

    def round_cells(self, runs: list[RunMetrics], round_: int) -> dict[str, str]:
        """Columns appended to the per-round table."""
        return {}

    def sections(self, root: Path, metrics: dict[str, list[RunMetrics]]) -> list[str]:
        """Markdown lines after the comparison table."""
        return []

    def plots(self, metrics: dict[str, list[RunMetrics]], figures: Figures) -> None:
        """More figures."""


def readable(paths: list[Path], arm: str, extension: ReportExtension) -> list[RunMetrics]:
    """Metrics of the runs that can be read now; a run still being written (locked store) is left out."""
    out = []
    for p in paths:
        try:
            m = run_metrics(p, arm)
            extension.measure(p, m)
            out.append(m)
        except StoreError as e:
            log.warning("skipping %s: %s", p, e)
    return out


def summary_rows(metrics: dict[str, list[RunMetrics]], extension: ReportExtension) -> list[dict[str, str]]:
    """The comparison table: one row per arm, mean ± std over seeds."""
    return [
        {
            "arm": arm,
            "seeds": str(len(runs)),
            **extension.summary(runs),
            "prompt distinct-2": fmt([mean(list(r.distinct2.values())) for r in runs]),
            "pairs / round": fmt([mean([float(v) for v in r.pairs.values()]) for r in runs]),
            "pair yield": fmt([mean(list(r.pair_yield.values())) for r in runs if r.pair_yield]),
            "least distinct prompts / asked": fmt(
                [min(distinct_share(r).values(), default=float("nan")) for r in runs]
            ),
            "rounds without a pair": str(sum(len(r.carried_over) for r in runs)),
        }
        for arm, runs in metrics.items()
    ]


def round_rows(runs: list[RunMetrics], extension: ReportExtension) -> list[dict[str, str]]:
    rounds_played = {k for r in runs for k in r.rewards}
    rounds = sorted(rounds_played | {k for r in runs for k in extension.rounds(r)})
    return [
        {
            "round": str(k),
            "prompts": fmt([float(r.prompts[k]) for r in runs if k in r.prompts]),
            "reward": fmt([mean(r.rewards.get(k, [])) for r in runs if k in r.rewards]),
            "attack success": fmt([r.attack_success[k] for r in runs if k in r.attack_success]),
            "distinct-2": fmt([r.distinct2[k] for r in runs if k in r.distinct2]),
            "pairwise dist": fmt([r.pairwise[k] for r in runs if k in r.pairwise]),
            "pairs": fmt([float(r.pairs.get(k, 0)) for r in runs if k in r.rewards]),
            "pair yield": fmt([r.pair_yield[k] for r in runs if k in r.pair_yield]),
            "extra answers": fmt([float(r.resampled[k]) for r in runs if k in r.resampled]),
            "defender carried over": str(sum(k in r.carried_over for r in runs))
            if k in rounds_played
            else "",
            **extension.round_cells(runs, k),
        }
        for k in rounds
    ]


def write_report(
    run: str | Path, out: str | Path | None = None, extension: ReportExtension | None = None
) -> Path:
    """Compute every run's metrics, plot, and write `<out>/REPORT.md` (out defaults to the run dir)."""
    extension = extension or ReportExtension()
    root = Path(run)
    out_dir = Path(out) if out else root
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {arm: ms for arm, paths in find_runs(root).items() if (ms := readable(paths, arm, extension))}
    rows = summary_rows(metrics, extension)
    figures = Figures(out_dir, list(metrics))
    _plots(metrics, figures)
    extension.plots(metrics, figures)
    lines = [f"# Sparring report: {root}", "", "## Comparison", "", markdown_table(rows)]
    lines += extension.sections(root, metrics)
    lines += ["## Per round", ""]
    for arm, runs in metrics.items():
        lines += [f"### {arm}", "", markdown_table(round_rows(runs, extension))]
    lines += ["## Figures", ""]
    for name, caption in figures.saved:
        lines += [f"![{caption}]({name})", "", caption, ""]
    (out_dir / "REPORT.md").write_text("\n".join(lines), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("wrote %s", out_dir / "REPORT.md")
    return out_dir / "REPORT.md"


def report_cli(doc: str, extension: ReportExtension | None = None) -> None:
    """The `--run DIR [--out DIR]` command of this report and of every extension's."""
    from core.cli import main_guard, setup_logging

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--run", required=True, help="a run dir or an experiment dir")
    p.add_argument("--out", default=None, help="where REPORT.md and the PNGs go (default: --run)")
    args = p.parse_args()
    setup_logging()
    print(main_guard(lambda: write_report(args.run, args.out, extension)))


if __name__ == "__main__":
    report_cli(__doc__ or "")
