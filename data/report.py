"""`python -m data.report --run DIR`: Markdown + HTML + PNG report of a run, or of the arms of an experiment.

For one run it shows what a user of that run needs, read only from the store: per round the reward
distribution of every scorer (a combined scorer's parts beside the combination; axes named by the scorer),
attack success by the scorer's failure rule (`reward.failure_threshold()`; none for a reward model without
`reward.failure_below`, and then none is shown) overall and by prompt category where prompts have one, pairs,
margins and pair yield, prompt diversity (distinct-2; mean pairwise 1−Jaccard, estimated from 20,000 sampled
pairs above 300 prompts) and novelty against history (the attacker's stored novelty), the hardest prompts with
their best and worst answers, and the players' lineage. DIR may also be an experiment
(`DIR/<arm>/seed-<s>/sparring.duckdb`): arms are then compared as mean ± standard deviation over seeds, and an
experiment adds its own measurements, columns, sections and figures through a `ReportExtension` (`toy.report`
is one), so this module knows nothing of any world. `REPORT.html` beside `REPORT.md` has the same text and the
figures embedded: one file that opens offline. Large rounds are read as Arrow columns and SQL aggregates,
never as rows of text (100k prompts report in seconds, bench/scale.py).
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

from core.config import recorded_reward
from core.errors import StoreError
from core.text import distinct_ngrams, mean_pairwise_distance
from data import sql
from data.report_figures import Figures, plot_all
from data.store import STORE_FILE, Store

log = logging.getLogger(__name__)


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
    scorer: dict[int, str] = field(default_factory=dict)  # the round's scorer (its scores are `rewards`)
    failure_below: dict[int, float | None] = field(default_factory=dict)  # the round's failure rule
    parts: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # a combined scorer's parts
    by_category: dict[int, dict[str, float]] = field(default_factory=dict)  # attack success per category
    novelty: dict[int, float] = field(default_factory=dict)  # mean novelty against history (attacker step)
    hardest: list[dict[str, Any]] = field(default_factory=list)  # sql.REPORT_HARDEST rows
    lineage: list[dict[str, Any]] = field(default_factory=list)  # sql.REPORT_LINEAGE rows
    extra: dict[str, Any] = field(default_factory=dict)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def fail_rate(rewards: list[float], below: float | None) -> float:
    """The share of answers below the failure threshold (nan when the scorer has no failure rule)."""
    if below is None:
        return float("nan")
    return mean([1.0 if r < below else 0.0 for r in rewards])


HARDEST_PER_ROUND = 3


def run_metrics(path: Path, arm: str = "run") -> RunMetrics:
    """Compute a run's metrics from its store (read-only)."""
    m = RunMetrics(arm, path)
    with Store.for_run(path, read_only=True) as store:
        prompts = store.rows(sql.REPORT_PROMPTS)
        pairs = store.rows(sql.REPORT_PAIRS)
        stages = store.rows(sql.REPORT_STAGE_DETAILS)
        configs = store.rows(sql.REPORT_ROUNDS)
        m.hardest = store.rows(sql.REPORT_HARDEST, {"k": HARDEST_PER_ROUND})
        m.novelty = {r["round"]: r["novelty"] for r in store.rows(sql.REPORT_NOVELTY)}
        m.lineage = store.rows(sql.REPORT_LINEAGE)
        for row in configs:
            round_, reward = row["round"], recorded_reward(row["config_json"])
            m.scorer[round_], m.failure_below[round_] = row["scorer"], reward.failure_threshold()
            m.rewards[round_] = _scores(store, round_, row["scorer"])
            m.parts[round_] = {part.name: _scores(store, round_, part.name) for part in reward.parts}
            if m.rewards[round_] and m.failure_below[round_] is not None:
                m.attack_success[round_] = fail_rate(m.rewards[round_], m.failure_below[round_])
            asked = json.loads(row["config_json"]).get("attacker", {}).get("num_prompts")
            if asked:
                m.asked[round_] = int(asked)
            if m.failure_below[round_] is not None:
                by_category = store.rows(
                    sql.REPORT_FAILURES_BY_CATEGORY,
                    {"round": round_, "scorer": row["scorer"], "below": m.failure_below[round_]},
                )
                m.by_category[round_] = {r["category"]: r["attack_success"] for r in by_category}
    for row in stages:
        details = json.loads(row["details"] or "{}")
        if row["stage"] == "select" and details.get("pair_yield") is not None:
            m.pair_yield[row["round"]] = details["pair_yield"]
        elif row["stage"] == "resample":
            m.resampled[row["round"]] = int(details.get("extra_samples", 0))
        elif row["stage"] == "train_defender" and details.get("carried_over"):
            m.carried_over.add(row["round"])
    m.rewards = {k: v for k, v in m.rewards.items() if v}
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


def _scores(store: Store, round_: int, scorer: str) -> list[float]:
    return store.arrow(sql.REPORT_SCORES, {"round": round_, "scorer": scorer}).column(0).to_pylist()


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
    """mean ± std over seeds; one value (one run) alone."""
    mean_, std = stat(values)
    if mean_ != mean_:
        return "–"
    return f"{mean_:.3f}" if len([v for v in values if v == v]) == 1 else f"{mean_:.3f} ± {std:.3f}"


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
    parts = sorted({p for r in runs for v in r.parts.values() for p in v})
    return [
        {
            "round": str(k),
            "prompts": fmt([float(r.prompts[k]) for r in runs if k in r.prompts]),
            "reward": fmt([mean(r.rewards.get(k, [])) for r in runs if k in r.rewards]),
            **{
                f"part: {part}": fmt([mean(r.parts[k][part]) for r in runs if r.parts.get(k, {}).get(part)])
                for part in parts
            },
            "attack success": fmt([r.attack_success[k] for r in runs if k in r.attack_success]),
            "distinct-2": fmt([r.distinct2[k] for r in runs if k in r.distinct2]),
            "pairwise dist": fmt([r.pairwise[k] for r in runs if k in r.pairwise]),
            "novelty": fmt([r.novelty[k] for r in runs if k in r.novelty]),
            "pairs": fmt([float(r.pairs.get(k, 0)) for r in runs if k in r.rewards]),
            "mean margin": fmt([mean(r.margins[k]) for r in runs if r.margins.get(k)]),
            "pair yield": fmt([r.pair_yield[k] for r in runs if k in r.pair_yield]),
            "extra answers": fmt([float(r.resampled[k]) for r in runs if k in r.resampled]),
            "defender carried over": str(sum(k in r.carried_over for r in runs))
            if k in rounds_played
            else "",
            **extension.round_cells(runs, k),
        }
        for k in rounds
    ]


# ---------------------------------------------------------------------------------------------------------
# One run: what its user needs beyond the per-round table


def failure_rule(m: RunMetrics) -> str:
    rules = {(m.scorer[k], b) for k, b in m.failure_below.items()}
    if not rules:
        return "no round recorded"
    return "; ".join(
        f"An answer scored below {b:g} by {s} is a defender failure (an attack success)"
        if b is not None
        else f"{s} has no failure rule (a reward model's scale says nothing of failure): attack success is not "
        "reported; set reward.failure_below to define one"
        for s, b in sorted(rules, key=str)
    )


def _cell(text: Any, limit: int = 140) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, long texts cut."""
    line = " ".join(str(text).split()).replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_sections(m: RunMetrics) -> list[str]:
    """Scorer and failure rule, attack success by category, the hardest prompts, the lineage."""
    lines = [
        "## Run",
        "",
        f"Scorer: {', '.join(sorted(set(m.scorer.values()))) or '–'}. {failure_rule(m)}.",
        "",
    ]
    categories = sorted({c for cats in m.by_category.values() for c in cats})
    if categories:
        rows = [
            {"round": str(k), **{c: f"{cats[c]:.3f}" if c in cats else "–" for c in categories}}
            for k, cats in sorted(m.by_category.items())
        ]
        lines += ["## Attack success by category", "", markdown_table(rows)]
    if m.hardest:
        rows = [
            {
                "round": str(h["round"]),
                "prompt": _cell(h["prompt"]),
                "mean": f"{h['mean_reward']:.3f}",
                "best answer": _cell(h["best"]),
                "best": f"{h['best_reward']:.3f}",
                "worst answer": _cell(h["worst"]),
                "worst": f"{h['worst_reward']:.3f}",
            }
            for h in m.hardest
        ]
        lines += [
            f"## Hardest prompts ({HARDEST_PER_ROUND} per round, lowest mean score)",
            "",
            markdown_table(rows),
        ]
    if m.lineage:
        rows = []
        for model in m.lineage:
            details = json.loads(model["details"] or "{}")
            trained_on = (
                "carried over (no pair)"
                if details.get("carried_over")
                else ", ".join(f"{details[k]} {k}" for k in ("pairs", "prompts") if k in details) or "–"
            )
            rows.append(
                {
                    "trained on round": str(model["round"]),
                    "role": model["role"],
                    "model": _cell(model["path"], 80),
                    "from": _cell(model["parent"], 80),
                    "data": trained_on,
                }
            )
        lines += ["## Players' lineage", "", markdown_table(rows)]
    return lines


# ---------------------------------------------------------------------------------------------------------
# Writing it


def write_report(
    run: str | Path, out: str | Path | None = None, extension: ReportExtension | None = None
) -> Path:
    """Compute every run's metrics, plot, and write `<out>/REPORT.md` and `REPORT.html` (out: the run dir)."""
    extension = extension or ReportExtension()
    root = Path(run)
    runs = find_runs(root)
    if not runs:
        raise StoreError(
            f"'{root}' holds no run store ({STORE_FILE}) and no experiment (<arm>/seed-*/{STORE_FILE})"
        )
    single = list(runs) == ["run"]
    if single:  # one run: a store that cannot be read is the command's one-line error
        metrics = {"run": [run_metrics(root)]}
        extension.measure(root, metrics["run"][0])
    else:  # an experiment: a run still being written is left out (readable), but not all of them
        metrics = {arm: ms for arm, paths in runs.items() if (ms := readable(paths, arm, extension))}
        if not metrics:
            raise StoreError(f"no run store under '{root}' could be read (each was skipped, see above)")
    out_dir = Path(out) if out else root
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = Figures(out_dir, list(metrics))
    plot_all(metrics, figures)
    extension.plots(metrics, figures)
    lines = [f"# Sparring report: {root}", ""]
    rows = summary_rows(metrics, extension)
    if single and metrics:
        lines += run_sections(metrics["run"][0])
    else:
        lines += ["## Comparison", "", markdown_table(rows)]
    lines += extension.sections(root, metrics)
    lines += ["## Per round", ""]
    for arm, arm_runs in metrics.items():
        lines += ([] if single else [f"### {arm}", ""]) + [markdown_table(round_rows(arm_runs, extension))]
    lines += ["## Figures", ""]
    for name, caption in figures.saved:
        lines += [f"![{caption}]({name})", "", caption, ""]
    markdown_text = "\n".join(lines)
    (out_dir / "REPORT.md").write_text(markdown_text, encoding="utf-8")
    (out_dir / "REPORT.html").write_text(to_html(markdown_text, out_dir, str(root)), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("wrote %s and REPORT.html", out_dir / "REPORT.md")
    return out_dir / "REPORT.md"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sparring report: {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:13px;margin:1em 0}}th,td{{border:1px solid #ccc;padding:3px 7px;
vertical-align:top}}th{{background:#f3f3f3}}img{{max-width:100%}}code{{background:#f3f3f3}}</style></head>
<body>
{body}
</body></html>
"""


def to_html(markdown_text: str, folder: Path, title: str) -> str:
    """The Markdown as one self-contained HTML page (python-markdown with tables; the PNGs embedded as data
    URIs, so the page opens offline and can be mailed alone)."""
    import base64
    import html
    import re

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match[str]) -> str:
        image = folder / html.unescape(match.group(1))
        if not image.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return _HTML.format(title=html.escape(title), body=body)


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
