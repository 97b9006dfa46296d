"""`python -m data.report --run DIR`: Markdown + PNG report of a run, or of a toy-world experiment's arms.

Reads only the run stores (and the category file named in each round's config): reward distributions per
round, attack success per category per round (the judge's reward < 0 on the round's responses), prompt
diversity per round (distinct-2 and mean pairwise 1−Jaccard over the round's prompts), pairs and margins,
held-out reward per round and the attack probes (`evals`, written by `generate.experiment`). DIR is either one
run (holding `sparring.duckdb`) or an experiment (`DIR/<arm>/seed-<s>/sparring.duckdb`); arms are summarised
as mean ± standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data import sql
from data.errors import StoreError
from data.store import STORE_FILE, Store
from data.toy_world import FAIL_BELOW, UNKNOWN, World, distinct_ngrams, load_world, mean_pairwise_distance

log = logging.getLogger(__name__)


@dataclass
class RunMetrics:
    """Everything the report shows about one run, keyed by round."""

    arm: str
    path: Path
    rewards: dict[int, list[float]] = field(default_factory=dict)
    attack_success: dict[int, float] = field(default_factory=dict)
    attack_by_category: dict[int, dict[str, float]] = field(default_factory=dict)
    prompts: dict[int, int] = field(default_factory=dict)  # stored; fewer than asked = collapse
    distinct2: dict[int, float] = field(default_factory=dict)
    pairwise: dict[int, float] = field(default_factory=dict)
    pairs: dict[int, int] = field(default_factory=dict)
    margins: dict[int, list[float]] = field(default_factory=dict)
    heldout: dict[int, float] = field(default_factory=dict)
    heldout_by_kind: dict[int, dict[str, float]] = field(default_factory=dict)
    probe: dict[str, dict[int, float]] = field(default_factory=dict)  # attack_before/after -> round -> ASR
    probe_distinct2: dict[str, dict[int, float]] = field(default_factory=dict)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _fail_rate(rewards: list[float]) -> float:
    return _mean([1.0 if r < FAIL_BELOW else 0.0 for r in rewards])


def run_metrics(path: Path, arm: str = "run") -> RunMetrics:
    """Compute a run's metrics from its store (read-only)."""
    m = RunMetrics(arm, path)
    with Store.for_run(path, read_only=True) as store:
        rounds = store.rows(sql.REPORT_ROUNDS)
        responses = store.rows(sql.REPORT_RESPONSES)
        prompts = store.rows(sql.REPORT_PROMPTS)
        pairs = store.rows(sql.REPORT_PAIRS)
        evals = store.rows(sql.ALL_EVALS) if store.scalar(sql.HAS_EVALS) else []
    world = _world(rounds)
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in responses:
        by_round[r["round"]].append(r)
    for round_, rows in sorted(by_round.items()):
        m.rewards[round_] = [r["reward"] for r in rows]
        m.attack_success[round_] = _fail_rate(m.rewards[round_])
        if world is not None:
            cats: dict[str, list[float]] = defaultdict(list)
            for r in rows:
                cats[world.classify(r["prompt"])].append(r["reward"])
            m.attack_by_category[round_] = {c: _fail_rate(v) for c, v in cats.items()}
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
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for e in evals:
        grouped[(e["round"], e["kind"])].append(e)
    for (round_, kind), rows in sorted(grouped.items()):
        rewards = [e["reward"] for e in rows]
        if kind == "heldout":
            m.heldout[round_] = _mean(rewards)
            if world is not None:
                kinds: dict[str, list[float]] = defaultdict(list)
                for e in rows:
                    c = world.category(e["category"] or UNKNOWN)
                    kinds[c.kind if c else UNKNOWN].append(e["reward"])
                m.heldout_by_kind[round_] = {k: _mean(v) for k, v in kinds.items()}
        else:
            m.probe.setdefault(kind, {})[round_] = _fail_rate(rewards)
            m.probe_distinct2.setdefault(kind, {})[round_] = distinct_ngrams(
                sorted({e["prompt"] for e in rows}), 2
            )
    return m


def _world(rounds: list[dict[str, Any]]) -> World | None:
    """The category file of the run's judge, if it used one (a reward-model run has no categories)."""
    for r in rounds:
        reward = json.loads(r["config_json"]).get("reward", {})
        if reward.get("kind") == "judge" and Path(reward.get("model", "")).is_file():
            return load_world(reward["model"])
    return None


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


def _stat(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _fmt(values: list[float]) -> str:
    mean, std = _stat(values)
    return "–" if mean != mean else f"{mean:.3f} ± {std:.3f}"


def _per_round(runs: list[RunMetrics], attr: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for round_, v in getattr(r, attr).items():
            out[round_].append(v)
    return dict(sorted(out.items()))


def summary_rows(metrics: dict[str, list[RunMetrics]]) -> list[dict[str, str]]:
    """The comparison table: one row per arm, mean ± std over seeds."""
    rows = []
    for arm, runs in metrics.items():
        first = [r.heldout[min(r.heldout)] for r in runs if r.heldout]
        last = [r.heldout[max(r.heldout)] for r in runs if r.heldout]
        gain = [r.heldout[max(r.heldout)] - r.heldout[min(r.heldout)] for r in runs if r.heldout]
        last_kind = [r.heldout_by_kind[max(r.heldout_by_kind)] for r in runs if r.heldout_by_kind]
        before = [_mean(list(r.probe.get("attack_before", {}).values())) for r in runs if r.probe]
        after = [_mean(list(r.probe.get("attack_after", {}).values())) for r in runs if r.probe]
        lift = [a - b for a, b in zip(after, before, strict=True)]
        rows.append(
            {
                "arm": arm,
                "seeds": str(len(runs)),
                "held-out reward, start": _fmt(first),
                "held-out reward, end": _fmt(last),
                "held-out gain": _fmt(gain),
                "end, unsafe only": _fmt([k.get("unsafe", float("nan")) for k in last_kind]),
                "end, benign only": _fmt([k.get("benign", float("nan")) for k in last_kind]),
                "attack success before → after step": f"{_fmt(before)} → {_fmt(after)}" if before else "–",
                "lift": _fmt(lift) if before else "–",
                "prompt distinct-2": _fmt([_mean(list(r.distinct2.values())) for r in runs]),
                "pairs / round": _fmt([_mean([float(v) for v in r.pairs.values()]) for r in runs]),
            }
        )
    return rows


def find_ablations(root: Path) -> dict[str, list[Path]]:
    """`generate.experiment --ablate-diversity` output: DIR/ablations/<name>/seed-*/ (copies of game runs)."""
    found: dict[str, list[Path]] = {}
    for store in sorted(root.glob(f"ablations/*/seed-*/{STORE_FILE}")):
        found.setdefault(store.parent.parent.name, []).append(store.parent)
    return found


def ablation_rows(game: list[RunMetrics], ablations: dict[str, list[RunMetrics]]) -> list[dict[str, str]]:
    """Acceptance (d): the attacker's step with and without the diversity bonus, same data, same defender."""

    def row(name: str, runs: list[RunMetrics]) -> dict[str, str]:
        def over_rounds(kind: str, attr: str) -> list[float]:
            return [_mean(list(getattr(r, attr).get(kind, {}).values())) for r in runs]

        return {
            "attacker step": name,
            "seeds": str(len(runs)),
            "attack success after step": _fmt(over_rounds("attack_after", "probe")),
            "distinct-2 of its prompts": _fmt(over_rounds("attack_after", "probe_distinct2")),
            "distinct-2 before step": _fmt(over_rounds("attack_before", "probe_distinct2")),
        }

    rows = [row("the game's own step (config)", game)] if game else []
    rows += [row(f"same data, {ablation_label(name)}", runs) for name, runs in ablations.items()]
    return rows


def ablation_label(name: str) -> str:
    """`lambda0-T0.5-ep2-lr0.001` (`generate.experiment.ablation_name`) -> `λ = 0, T = 0.5, 2 epochs, lr 0.001`."""
    m = re.fullmatch(r"lambda(?P<l>[^-]+)-T(?P<T>[^-]+)-ep(?P<ep>[^-]+)-lr(?P<lr>.+)", name)
    return f"λ = {m['l']}, T = {m['T']}, {m['ep']} epochs, lr {m['lr']}" if m else name


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no runs)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Plots


def _plots(metrics: dict[str, list[RunMetrics]], out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: list[tuple[str, str]] = []
    arms = list(metrics)
    n = len(arms)

    def save(fig: Any, name: str, caption: str, integer_rounds: bool = True) -> None:
        from matplotlib.ticker import MaxNLocator

        for ax in fig.axes if integer_rounds else ():
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        figures.append((name, caption))

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
    axes[0][0].set_ylabel("defender reward (judge)")
    save(
        fig, "rewards.png", "Defender reward on each round's prompts, all seeds pooled.", integer_rounds=False
    )

    # attack success per category per round (heatmaps, pooled mean over seeds)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        cells: dict[tuple[str, int], list[float]] = defaultdict(list)
        for r in metrics[arm]:
            for round_, cats in r.attack_by_category.items():
                for c, rate in cats.items():
                    cells[(c, round_)].append(rate)
        cats_ = sorted({c for c, _ in cells})
        rounds = sorted({k for _, k in cells})
        grid = [[_mean(cells.get((c, k), [])) for k in rounds] for c in cats_]
        if grid:
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds", aspect="auto")
            ax.set_yticks(range(len(cats_)), cats_)
            ax.set_xticks(range(len(rounds)), [str(k) for k in rounds])
            for i, row in enumerate(grid):
                for j, cell in enumerate(row):
                    if cell == cell:
                        ax.text(j, i, f"{cell:.2f}", ha="center", va="center", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(arm)
        ax.set_xlabel("round")
    save(
        fig,
        "attack_success.png",
        "Attack success (judge reward < 0) per category per round, mean over seeds.",
        integer_rounds=False,
    )

    def lines(attr: str, name: str, ylabel: str, caption: str) -> None:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for arm in arms:
            per = _per_round(metrics[arm], attr)
            if not per:
                continue
            xs = list(per)
            stats = [_stat(v) for v in per.values()]
            ax.errorbar(
                xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, label=arm
            )
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        save(fig, name, caption)

    lines("heldout", "heldout.png", "held-out reward", "Held-out reward of each round's defender (round R+1 = "
          "the last trained one), mean ± std over seeds.")  # fmt: skip
    lines("distinct2", "diversity.png", "distinct-2 of the round's prompts",
          "Prompt diversity per round (distinct word bigrams / all bigrams), mean ± std over seeds.")  # fmt: skip

    # the attack probe: before vs after the attacker's step, per round
    probe_arms = [a for a in arms if any(r.probe for r in metrics[a])]
    if probe_arms:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for color, arm in enumerate(probe_arms):
            for kind, style in (("attack_before", "--"), ("attack_after", "-")):
                probe: dict[int, list[float]] = defaultdict(list)
                for r in metrics[arm]:
                    for k, rate in r.probe.get(kind, {}).items():
                        probe[k].append(rate)
                xs = sorted(probe)
                stats = [_stat(probe[k]) for k in xs]
                ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats], linestyle=style, marker="o",
                            capsize=3, color=f"C{color}", label=f"{arm} {kind.split('_')[1]}")  # fmt: skip
        ax.set_xlabel("round (defender of that round)")
        ax.set_ylabel("attack success")
        ax.legend(fontsize=7)
        save(fig, "attack_probe.png", "Attack success on round r's defender with the attacker before (dashed) and "
             "after (solid) its reward-weighted step on round r, mean ± std over seeds.")  # fmt: skip

    # pairs and margins
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm in arms:
        per = _per_round(metrics[arm], "pairs")
        axes[0].plot(
            list(per), [_stat([float(x) for x in v])[0] for v in per.values()], marker="o", label=arm
        )
        margins: dict[int, list[float]] = defaultdict(list)
        for r in metrics[arm]:
            for k, v in r.margins.items():
                margins[k] += v
        axes[1].plot(sorted(margins), [_mean(margins[k]) for k in sorted(margins)], marker="o", label=arm)
    axes[0].set_ylabel("pairs per round")
    axes[1].set_ylabel("mean margin (chosen − rejected)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.legend(fontsize=7)
    save(fig, "pairs.png", "Preference pairs per round (mean over seeds) and their mean reward margin.")
    return figures


# ---------------------------------------------------------------------------------------------------------


def _readable(paths: list[Path], arm: str) -> list[RunMetrics]:
    """Metrics of the runs that can be read now; a run still being written (locked store) is left out."""
    out = []
    for p in paths:
        try:
            out.append(run_metrics(p, arm))
        except StoreError as e:
            log.warning("skipping %s: %s", p, e)
    return out


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Compute every run's metrics, plot, and write `<out>/REPORT.md` (out defaults to the run dir)."""
    root = Path(run)
    out_dir = Path(out) if out else root
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = find_runs(root)
    metrics = {arm: ms for arm, paths in runs.items() if (ms := _readable(paths, arm))}
    rows = summary_rows(metrics)
    ablations = {name: _readable(paths, name) for name, paths in find_ablations(root).items()}
    figures = _plots(metrics, out_dir)
    lines = [f"# Sparring report: {root}", "", "## Comparison", "", markdown_table(rows)]
    if ablations:
        lines += [
            "## Diversity ablation (one attacker step, same data)",
            "",
            markdown_table(ablation_rows(metrics.get("game", []), ablations)),
            "Each round's attacker step of the `game` runs redone with another λ (and, where named, another "
            "weight temperature T, epochs or learning rate) from the same parent on the same prompts, then probed "
            "like the game's step (mean over rounds, ± std over seeds).",
            "",
        ]
    lines += [
        "Held-out reward: the judge's mean reward on held-out prompts (templates and subjects never trained on) "
        "answered by the round's defender; *start* = the warm-up defender, *end* = the one trained on the last "
        "round. Attack success before → after: round r's instructions given to the attacker that played round r "
        "and to the one trained on it, answered by round r's defender (mean over rounds). Mean ± std over seeds.",
        "",
        "## Per round",
        "",
    ]
    for arm, runs_ in metrics.items():
        lines += [f"### {arm}", "", "| round | prompts | reward | attack success | distinct-2 | pairwise dist | "
                  "pairs | held-out reward | probe before → after |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        rounds = sorted({k for r in runs_ for k in (*r.rewards, *r.heldout)})
        for k in rounds:
            probe = ""
            if any(r.probe for r in runs_):
                b = [r.probe.get("attack_before", {}).get(k, float("nan")) for r in runs_]
                a = [r.probe.get("attack_after", {}).get(k, float("nan")) for r in runs_]
                probe = f"{_fmt(b)} → {_fmt(a)}"
            lines.append(
                f"| {k} | {_fmt([float(r.prompts[k]) for r in runs_ if k in r.prompts])} "
                f"| {_fmt([_mean(r.rewards.get(k, [])) for r in runs_ if k in r.rewards])} "
                f"| {_fmt([r.attack_success[k] for r in runs_ if k in r.attack_success])} "
                f"| {_fmt([r.distinct2[k] for r in runs_ if k in r.distinct2])} "
                f"| {_fmt([r.pairwise[k] for r in runs_ if k in r.pairwise])} "
                f"| {_fmt([float(r.pairs.get(k, 0)) for r in runs_ if k in r.rewards])} "
                f"| {_fmt([r.heldout[k] for r in runs_ if k in r.heldout])} | {probe} |"
            )
        lines.append("")
    lines += ["## Figures", ""]
    for name, caption in figures:
        lines += [f"![{caption}]({name})", "", caption, ""]
    (out_dir / "REPORT.md").write_text("\n".join(lines), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("wrote %s", out_dir / "REPORT.md")
    return out_dir / "REPORT.md"


def main() -> None:
    from data.cli import main_guard, setup_logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run dir or an experiment dir (runs/toy)")
    p.add_argument("--out", default=None, help="where REPORT.md and the PNGs go (default: --run)")
    args = p.parse_args()
    setup_logging()
    print(main_guard(lambda: write_report(args.run, args.out)))


if __name__ == "__main__":
    main()
