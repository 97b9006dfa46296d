"""The report's figures: matplotlib PNGs saved beside REPORT.md, each with its caption, axes named by the scorer."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data.report import RunMetrics


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
        self.ylabels: dict[str, list[str]] = {}  # figure -> its axes' y labels (what a reader sees named)

    def save(self, fig: Any, name: str, caption: str, integer_rounds: bool = True) -> None:
        import math

        from matplotlib.ticker import MaxNLocator

        for ax in fig.axes if integer_rounds else ():
            low, high = ax.get_xlim()
            if high - low < 12:  # a few rounds: a tick on each, never between rounds
                ax.set_xticks(range(math.ceil(low), math.floor(high) + 1))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.ylabels[name] = [ax.get_ylabel() for ax in fig.axes]
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=90)
        self.plt.close(fig)
        self.saved.append((name, caption))

    def lines(
        self, metrics: dict[str, list[RunMetrics]], attr: str, name: str, ylabel: str, caption: str
    ) -> None:
        """One line per arm of a per-round metric, mean ± std over seeds."""
        from data.report import per_round, stat

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
        if len(self.arms) > 1:
            ax.legend(fontsize=8)
        self.save(fig, name, caption)


def scorer_label(metrics: dict[str, list[RunMetrics]]) -> str:
    """The scorer the runs were scored with, for axis labels (several: joined)."""
    names = sorted({s for runs in metrics.values() for r in runs for s in r.scorer.values()})
    return " / ".join(names) or "reward"


def plot_all(metrics: dict[str, list[RunMetrics]], figures: Figures) -> None:
    """Rewards per round per scorer, attack success, diversity and novelty, pairs and margins."""
    scorer = scorer_label(metrics)
    _rewards(metrics, figures, scorer)
    if any(r.attack_success for runs in metrics.values() for r in runs):
        rules = sorted(
            {b for runs in metrics.values() for r in runs for b in r.failure_below.values() if b is not None}
        )
        rule = " or ".join(f"< {b:g}" for b in rules)
        figures.lines(metrics, "attack_success", "attack_success_rounds.png", f"attack success ({scorer} {rule})",
                      f"Attack success per round: the share of the defender's answers scored {rule} by {scorer}.")  # fmt: skip
    figures.lines(metrics, "distinct2", "diversity.png", "distinct-2 of the round's prompts",
                  "Prompt diversity per round (distinct word bigrams / all bigrams), mean ± std over seeds.")  # fmt: skip
    if any(r.novelty for runs in metrics.values() for r in runs):
        figures.lines(metrics, "novelty", "novelty.png", "novelty against history",
                      "Mean novelty of each round's prompts against the round's others and every earlier round's "
                      "(1 − closest similarity, the attacker's diversity term).")  # fmt: skip
    _pairs(metrics, figures, scorer)


def _rewards(metrics: dict[str, list[RunMetrics]], figures: Figures, scorer: str) -> None:
    """One box plot per arm (an experiment) or per scorer and part (one run), pooled over seeds."""
    panels: list[tuple[str, dict[int, list[float]]]] = []
    single = len(metrics) == 1 and len(next(iter(metrics.values()))) == 1
    for arm, runs in metrics.items():
        pooled: dict[int, list[float]] = defaultdict(list)
        for r in runs:
            for round_, v in r.rewards.items():
                pooled[round_] += v
        panels.append((scorer if single else arm, pooled))
        if single:
            for part in sorted({p for parts in runs[0].parts.values() for p in parts}):
                panels.append(
                    (f"part: {part}", {k: v[part] for k, v in runs[0].parts.items() if v.get(part)})
                )
    fig, axes = figures.plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, pooled) in zip(axes[0], panels, strict=True):
        if pooled:
            ax.boxplot([pooled[k] for k in sorted(pooled)], tick_labels=[str(k) for k in sorted(pooled)])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel(textwrap.fill(f"{title if single else scorer} score", 36), fontsize=9)
    figures.save(fig, "rewards.png", f"The defender's answers scored by {scorer} per round"
                 + (" (and each part of the combination)" if len(panels) > 1 and single else ", all seeds pooled")
                 + ".", integer_rounds=False)  # fmt: skip


def _pairs(metrics: dict[str, list[RunMetrics]], figures: Figures, scorer: str) -> None:
    from data.report import mean, per_round, stat

    fig, axes = figures.plt.subplots(1, 2, figsize=(9, 3.2))
    for arm in figures.arms:
        per = per_round(metrics[arm], "pairs")
        axes[0].plot(list(per), [stat([float(x) for x in v])[0] for v in per.values()], marker="o", label=arm)
        margins: dict[int, list[float]] = defaultdict(list)
        for r in metrics[arm]:
            for k, v in r.margins.items():
                margins[k] += v
        axes[1].plot(sorted(margins), [mean(margins[k]) for k in sorted(margins)], marker="o", label=arm)
    axes[0].set_ylabel("pairs per round")
    axes[1].set_ylabel(f"mean margin ({scorer})")
    for ax in axes:
        ax.set_xlabel("round")
        if len(figures.arms) > 1:
            ax.legend(fontsize=7)
    figures.save(
        fig, "pairs.png", "Preference pairs per round and their mean margin (over seeds in an experiment)."
    )
