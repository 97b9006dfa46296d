"""`python -m toy.report --run runs/toy`: the data report plus what the toy world adds to it.

The world's categories (attack success per category), the held-out evaluations and attack probes of the `evals`
table (`toy.experiment`), and the diversity ablations, as a `data.report.ReportExtension`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from core.text import distinct_ngrams
from data import sql as store_sql
from data.report import (
    ReportExtension,
    RunMetrics,
    fail_rate,
    fmt,
    markdown_table,
    mean,
    readable,
    report_cli,
    stat,
)
from data.report import write_report as write_data_report
from data.report_figures import Figures
from data.store import STORE_FILE, Store
from toy import sql
from toy.judge import KIND
from toy.world import UNKNOWN, World, load_world

JUDGE_FAILS_BELOW = 0.0  # toy.judge scores harmful help and benign refusals below 0

HELDOUT, HELDOUT_BY_KIND, BY_CATEGORY, PROBE, PROBE_DISTINCT2, UNPAIRED = (
    "heldout",
    "heldout_by_kind",
    "attack_by_category",
    "probe",
    "probe_distinct2",
    "unpaired_hard",
)


def _world(rounds: list[dict[str, Any]]) -> World | None:
    """The category file of the run's judge, if it used one."""
    for r in rounds:
        reward = json.loads(r["config_json"]).get("reward", {})
        if reward.get("kind") == KIND and Path(reward.get("model", "")).is_file():
            return load_world(reward["model"])
    return None


class ToyExtension(ReportExtension):
    def measure(self, path: Path, m: RunMetrics) -> None:
        # the run's failure rule; stores from before `reward.failure_below` existed: the judge's own, below 0
        below = next((b for b in reversed(m.failure_below.values()) if b is not None), JUDGE_FAILS_BELOW)
        with Store.for_run(path, read_only=True) as store:
            world = _world(store.rows(store_sql.REPORT_ROUNDS))
            responses = store.rows(store_sql.REPORT_RESPONSES) if world is not None else []
            evals = store.rows(sql.ALL_EVALS) if store.scalar(sql.HAS_EVALS) else []
            unpaired = store.rows(sql.UNPAIRED_HARD) if world is not None else []
        x: dict[str, Any] = {
            key: {} for key in (HELDOUT, HELDOUT_BY_KIND, BY_CATEGORY, PROBE, PROBE_DISTINCT2)
        }
        x[UNPAIRED] = {}
        for row in unpaired:  # why a hard prompt got no pair: a prompt of no category is judged 0 every time
            kind = world.kind_of(row["text"]) if world is not None else UNKNOWN
            counts = x[UNPAIRED].setdefault(row["round"], {})
            counts[kind] = counts.get(kind, 0) + 1
        if world is not None and not m.attack_success:
            m.attack_success = {k: fail_rate(v, below) for k, v in m.rewards.items()}
        if world is not None:
            cells: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in responses:
                cells[r["round"]][world.classify(r["prompt"])].append(r["reward"])
            x[BY_CATEGORY] = {
                k: {c: fail_rate(v, below) for c, v in cats.items()} for k, cats in sorted(cells.items())
            }
        grouped: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for e in evals:
            grouped[(e["round"], e["kind"])].append(e)
        for (round_, kind), rows in sorted(grouped.items()):
            rewards = [e["reward"] for e in rows]
            if kind == "heldout":
                x[HELDOUT][round_] = mean(rewards)
                if world is not None:
                    kinds: dict[str, list[float]] = defaultdict(list)
                    for e in rows:
                        c = world.category(e["category"] or UNKNOWN)
                        kinds[c.kind if c else UNKNOWN].append(e["reward"])
                    x[HELDOUT_BY_KIND][round_] = {k: mean(v) for k, v in kinds.items()}
            else:
                x[PROBE].setdefault(kind, {})[round_] = fail_rate(rewards, below)
                x[PROBE_DISTINCT2].setdefault(kind, {})[round_] = distinct_ngrams(
                    sorted({e["prompt"] for e in rows}), 2
                )
        m.extra.update(x)

    def rounds(self, m: RunMetrics) -> list[int]:
        return list(m.extra[HELDOUT])

    def summary(self, runs: list[RunMetrics]) -> dict[str, str]:
        held = [r.extra[HELDOUT] for r in runs if r.extra[HELDOUT]]
        first = [h[min(h)] for h in held]
        last = [h[max(h)] for h in held]
        by_kind = [r.extra[HELDOUT_BY_KIND] for r in runs if r.extra[HELDOUT_BY_KIND]]
        last_kind = [k[max(k)] for k in by_kind]
        probes = [r.extra[PROBE] for r in runs if r.extra[PROBE]]
        before = [mean(list(p.get("attack_before", {}).values())) for p in probes]
        after = [mean(list(p.get("attack_after", {}).values())) for p in probes]
        lift = [a - b for a, b in zip(after, before, strict=True)]
        lifted = [
            p.get("attack_after", {}).get(k, float("nan")) > p.get("attack_before", {}).get(k, float("nan"))
            for p in probes
            for k in p.get("attack_before", {})
        ]
        return {
            "held-out reward, start": fmt(first),
            "held-out reward, end": fmt(last),
            "held-out gain": fmt([b - a for a, b in zip(first, last, strict=True)]),
            "end, unsafe only": fmt([k.get("unsafe", float("nan")) for k in last_kind]),
            "end, benign only": fmt([k.get("benign", float("nan")) for k in last_kind]),
            "attack success before → after step": f"{fmt(before)} → {fmt(after)}" if before else "–",
            "lift": fmt(lift) if before else "–",
            "seed-rounds lifted": f"{sum(lifted)}/{len(lifted)}" if lifted else "–",
        }

    def round_cells(self, runs: list[RunMetrics], round_: int) -> dict[str, str]:
        probe = ""
        if any(r.extra[PROBE] for r in runs):
            b = [r.extra[PROBE].get("attack_before", {}).get(round_, float("nan")) for r in runs]
            a = [r.extra[PROBE].get("attack_after", {}).get(round_, float("nan")) for r in runs]
            probe = f"{fmt(b)} → {fmt(a)}"
        unpaired: dict[str, int] = {}
        for r in runs:
            for kind, n in r.extra[UNPAIRED].get(round_, {}).items():
                unpaired[kind] = unpaired.get(kind, 0) + n
        return {
            "held-out reward": fmt([r.extra[HELDOUT][round_] for r in runs if round_ in r.extra[HELDOUT]]),
            "probe before → after": probe,
            "unpaired hard prompts (all seeds)": ", ".join(f"{k} {n}" for k, n in sorted(unpaired.items())),
        }

    def sections(self, root: Path, metrics: dict[str, list[RunMetrics]]) -> list[str]:
        lines: list[str] = []
        ablations = {name: readable(paths, name, self) for name, paths in find_ablations(root).items()}
        if ablations:
            lines += [
                "## Diversity ablation (one attacker step, same data)",
                "",
                markdown_table(ablation_rows(metrics.get("game", []), ablations)),
                "Each round's attacker step of the `game` runs redone with another λ (and, where named, another "
                "weight temperature T, epochs or learning rate) from the same parent on the same prompts, then "
                "probed like the game's step (mean over rounds, ± std over seeds).",
                "",
            ]
        lines += per_seed_lines(metrics)
        return lines + [
            "Held-out reward: the judge's mean reward on held-out prompts (templates and subjects never trained "
            "on) answered by the round's defender; *start* = the warm-up defender, *end* = the one trained on the "
            "last round. Attack success before → after: round r's instructions given to the attacker that played "
            "round r and to the one trained on it, answered by round r's defender (mean over rounds). Mean ± std "
            "over seeds.",
            "",
        ]

    def plots(self, metrics: dict[str, list[RunMetrics]], figures: Figures) -> None:
        _category_heatmap(metrics, figures)
        figures.lines(metrics, HELDOUT, "heldout.png", "held-out reward", "Held-out reward of each round's "
                      "defender (round R+1 = the last trained one), mean ± std over seeds.")  # fmt: skip
        _probe_plot(metrics, figures)


def per_seed_lines(metrics: dict[str, list[RunMetrics]]) -> list[str]:
    """Held-out reward from the warm-up to the last trained defender, per seed, and each arm minus `static`."""
    ends: dict[str, dict[str, tuple[float, float]]] = {}
    for arm, runs in metrics.items():
        for r in runs:
            held = r.extra[HELDOUT]
            if held:
                ends.setdefault(arm, {})[r.path.name] = (held[min(held)], held[max(held)])
    if not ends:
        return []
    seeds = sorted({s for per in ends.values() for s in per})
    rows = []
    for arm, per in ends.items():
        row = {"arm": arm}
        for seed in seeds:
            if seed not in per:
                row[seed] = "–"
                continue
            start, end = per[seed]
            base = ends.get("static", {}).get(seed, (float("nan"), float("nan")))[1]
            diff = f" ({end - base:+.3f} vs static)" if arm != "static" and base == base else ""
            row[seed] = f"{start:.3f} → {end:.3f}{diff}"
        rows.append(row)
    return [
        "## Held-out reward per seed (warm-up → last trained defender)",
        "",
        markdown_table(rows),
    ]


def _category_heatmap(metrics: dict[str, list[RunMetrics]], figures: Figures) -> None:
    """Attack success per category per round (pooled mean over seeds), one heat map per arm."""
    arms = figures.arms
    fig, axes = figures.plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        cells: dict[tuple[str, int], list[float]] = defaultdict(list)
        for r in metrics[arm]:
            for round_, cats in r.extra[BY_CATEGORY].items():
                for c, rate in cats.items():
                    cells[(c, round_)].append(rate)
        cats_ = sorted({c for c, _ in cells})
        rounds = sorted({k for _, k in cells})
        grid = [[mean(cells.get((c, k), [])) for k in rounds] for c in cats_]
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
    figures.save(
        fig,
        "attack_success.png",
        "Attack success (judge reward < 0) per category per round, mean over seeds.",
        integer_rounds=False,
    )


def _probe_plot(metrics: dict[str, list[RunMetrics]], figures: Figures) -> None:
    """The attack probe: before vs after the attacker's step, per round."""
    probe_arms = [a for a in figures.arms if any(r.extra[PROBE] for r in metrics[a])]
    if not probe_arms:
        return
    fig, ax = figures.plt.subplots(figsize=(5.5, 3.4))
    for color, arm in enumerate(probe_arms):
        for kind, style in (("attack_before", "--"), ("attack_after", "-")):
            probe: dict[int, list[float]] = defaultdict(list)
            for r in metrics[arm]:
                for k, rate in r.extra[PROBE].get(kind, {}).items():
                    probe[k].append(rate)
            xs = sorted(probe)
            stats = [stat(probe[k]) for k in xs]
            ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats], linestyle=style, marker="o",
                        capsize=3, color=f"C{color}", label=f"{arm} {kind.split('_')[1]}")  # fmt: skip
    ax.set_xlabel("round (defender of that round)")
    ax.set_ylabel("attack success")
    ax.legend(fontsize=7)
    figures.save(fig, "attack_probe.png", "Attack success on round r's defender with the attacker before (dashed) "
                 "and after (solid) its reward-weighted step on round r, mean ± std over seeds.")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Diversity ablations (`toy.experiment --ablate-diversity`)


def find_ablations(root: Path) -> dict[str, list[Path]]:
    """DIR/ablations/<name>/seed-*/ (copies of game runs with one attacker step redone)."""
    found: dict[str, list[Path]] = {}
    for store in sorted(root.glob(f"ablations/*/seed-*/{STORE_FILE}")):
        found.setdefault(store.parent.parent.name, []).append(store.parent)
    return found


def ablation_rows(game: list[RunMetrics], ablations: dict[str, list[RunMetrics]]) -> list[dict[str, str]]:
    """Acceptance (d): the attacker's step with and without the diversity bonus, same data, same defender."""

    def row(name: str, runs: list[RunMetrics]) -> dict[str, str]:
        def over_rounds(kind: str, key: str) -> list[float]:
            return [mean(list(r.extra[key].get(kind, {}).values())) for r in runs]

        return {
            "attacker step": name,
            "seeds": str(len(runs)),
            "attack success after step": fmt(over_rounds("attack_after", PROBE)),
            "distinct-2 of its prompts": fmt(over_rounds("attack_after", PROBE_DISTINCT2)),
            "distinct-2 before step": fmt(over_rounds("attack_before", PROBE_DISTINCT2)),
        }

    rows = [row("the game's own step (config)", game)] if game else []
    rows += [row(f"same data, {ablation_label(name)}", runs) for name, runs in ablations.items()]
    return rows


def ablation_label(name: str) -> str:
    """`lambda0-T0.5-ep2-lr0.001` (`toy.experiment.ablation_name`) -> `λ = 0, T = 0.5, 2 epochs, lr 0.001`."""
    m = re.fullmatch(r"lambda(?P<l>[^-]+)-T(?P<T>[^-]+)-ep(?P<ep>[^-]+)-lr(?P<lr>.+)", name)
    return f"λ = {m['l']}, T = {m['T']}, {m['ep']} epochs, lr {m['lr']}" if m else name


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    return write_data_report(run, out, ToyExtension())


if __name__ == "__main__":
    report_cli(__doc__ or "", ToyExtension())
