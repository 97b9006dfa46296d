"""Store bench: our insert path vs DuckDB's own `INSERT … SELECT` from Arrow, and DuckDB's share of a round.

    python -m bench.store                  # ingest (200k response rows) + one tiny round on CPU (vLLM)
    python -m bench.store --no-round       # ingest only (seconds; what the smoke test runs, smaller)

Ingest: the same Arrow table of `responses` rows (the widest table: ids, a few hundred characters of text, a
JSON column) goes into a fresh store file per run, three ways, alternated `--repeats` times (median kept; the ratio of the fastest runs too):
- `duckdb`: a bare connection with our schema, `BEGIN; INSERT INTO responses SELECT * FROM arrow; COMMIT`;
- `ours: store.insert`: `Store.stage(...)` + `Store.insert` exactly as the respond stage writes
  (one transaction with the stage-log row);
- `ours: records→arrow→insert`: the same plus building the Arrow table from `ResponseRecord`s
  (`data.records.to_arrow`), i.e. everything the respond stage does after vLLM returns.
Target: `ours: store.insert` ≥ 0.9× DuckDB's rows/s.

Round share: one round of the demo config (tiny models, vLLM on CPU) runs in this process with every DuckDB
call of `Store` timed (connect + schema, statements, fetches, Arrow reads, commits); the share is that time
over the round's wall time. Target < 1%.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from bench.common import median, print_table, write_results
from data import sql
from data.records import ResponseRecord, to_arrow
from data.store import Store

log = logging.getLogger("bench.store")
REPO = Path(__file__).resolve().parents[1]
_WORDS = "the a to of and in is that it for you this can with be on not are your as or will help how".split()


def response_records(n: int, words: int = 60, seed: int = 0) -> list[ResponseRecord]:
    """`n` responses shaped like a round's: 4 samples per prompt, ~`words` random words, sampling JSON."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(_WORDS, k=words)) for _ in range(256)]
    gen = json.dumps({"max_tokens": 256, "n": 4, "seed": 12345, "temperature": 0.7, "top_p": 0.9})
    return [
        ResponseRecord(
            response_id=f"p{i // 4:08d}-{i % 4}",
            prompt_id=f"p{i // 4:08d}",
            round=1,
            sample_index=i % 4,
            text=texts[i % 256],
            finish_reason="length",
            prompt_tokens=40,
            completion_tokens=256,
            defender_model="tiny:policy",
            gen_params=gen,
        )
        for i in range(n)
    ]


def ingest_duckdb(path: Path, table: pa.Table) -> float:
    """DuckDB alone: our schema, then one `INSERT … SELECT` from the Arrow table in a transaction."""
    con = duckdb.connect(str(path))
    con.execute(sql.SCHEMA).fetchall()
    con.register("arrow_rows", table)
    start = time.perf_counter()
    con.execute("BEGIN TRANSACTION").fetchall()
    con.execute("INSERT INTO responses SELECT * FROM arrow_rows").fetchall()
    con.execute("COMMIT").fetchall()
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def ingest_ours(path: Path, table: pa.Table | None, records: list[ResponseRecord] | None = None) -> float:
    """What the respond stage does: one stage transaction writing the rows and the stage-log row."""
    store = Store(path)
    start = time.perf_counter()
    with store.stage(1, "respond") as result:
        rows = table if table is not None else to_arrow(records or [], ResponseRecord)
        result.rows = store.insert("responses", rows)
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def bench_ingest(n: int, repeats: int) -> list[dict[str, Any]]:
    records = response_records(n)
    table = to_arrow(records, ResponseRecord)
    methods = {
        "duckdb INSERT…SELECT": lambda p: ingest_duckdb(p, table),
        "ours: store.insert": lambda p: ingest_ours(p, table),
        "ours: records→arrow→insert": lambda p: ingest_ours(p, None, records),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats + 1):  # the first pass warms caches and is not kept
            for i, (name, fn) in enumerate(methods.items()):
                seconds = fn(Path(tmp) / f"{rep}-{i}.duckdb")
                if rep:
                    times[name].append(seconds)
    base = n / median(times["duckdb INSERT…SELECT"])
    best_base = n / min(times["duckdb INSERT…SELECT"])
    rows = []
    for name, values in times.items():
        rate = n / median(values)
        rows.append(
            {
                "method": name,
                "rows": n,
                "seconds": median(values),
                "rows_per_s": rate,
                "vs_duckdb": rate / base,
                # The fastest run of each is the least disturbed by other work on a shared machine.
                "vs_duckdb_best": n / min(values) / best_base,
                "mb": table.nbytes / 1e6,
                "times": values,
            }
        )
    return rows


class DuckClock:
    """Seconds spent inside DuckDB calls (nested calls counted once)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0
        self._start = 0.0

    def __enter__(self) -> DuckClock:
        if self._depth == 0:
            self._start = time.perf_counter()
            self.calls += 1
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start


class _TimedRelation:
    def __init__(self, rel: Any, clock: DuckClock):
        self._rel, self._clock = rel, clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._rel, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            with self._clock:
                return attr(*a, **k)

        return call


class TimedConnection:
    """Forwards to a DuckDB connection, timing `execute`/`fetchall`/`sql` (+ the relation's fetch)/`register`."""

    def __init__(self, con: Any, clock: DuckClock):
        self._con, self._clock = con, clock

    def execute(self, *a: Any, **k: Any) -> TimedConnection:
        with self._clock:
            self._con.execute(*a, **k)
        return self  # DuckDB's execute returns the connection; Store then calls fetchall on it

    def fetchall(self) -> Any:
        with self._clock:
            return self._con.fetchall()

    def sql(self, *a: Any, **k: Any) -> _TimedRelation:
        with self._clock:
            return _TimedRelation(self._con.sql(*a, **k), self._clock)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._con, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            with self._clock:
                return attr(*a, **k)

        return call


def bench_round(config: str | None, overrides: list[str]) -> dict[str, Any]:
    """Run one round in a temporary run dir with every `Store` DuckDB call timed."""
    from core.config import load_config
    from generate.round import run_round

    clock = DuckClock()
    original_init = Store.__init__

    def timed_init(self: Store, *a: Any, **k: Any) -> None:
        with clock:
            original_init(self, *a, **k)
        self.con = TimedConnection(self.con, clock)  # type: ignore[assignment]

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            config or REPO / "configs" / "demo.yaml",
            [f"run.dir={tmp}", f"run.tiny_models_dir={REPO / '.sparring' / 'tiny-models'}", *overrides],
        )
        Store.__init__ = timed_init  # type: ignore[method-assign]
        try:
            start = time.perf_counter()
            report = run_round(cfg, 1)
            wall = time.perf_counter() - start
        finally:
            Store.__init__ = original_init  # type: ignore[method-assign]
        with Store.for_run(tmp, read_only=True) as store:
            counts = {t: store.count(t, 1) for t in ("prompts", "responses", "scores", "pairs")}
    return {
        "round_seconds": wall,
        "duckdb_seconds": clock.seconds,
        "duckdb_calls": clock.calls,
        "duckdb_share": clock.seconds / wall,
        "stage_seconds": report.seconds,
        "rows": counts,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000, help="response rows ingested")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-round", action="store_true", help="skip the round (needs vLLM, a minute or two)")
    p.add_argument("--config", default=None, help="round config (default configs/demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="round config override")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    rows = bench_ingest(args.rows, args.repeats)
    print_table(
        rows,
        ["method", "rows", "seconds", "rows_per_s", "vs_duckdb", "vs_duckdb_best", "mb"],
        title="store ingest (responses)",
    )
    ours = next(r for r in rows if r["method"] == "ours: store.insert")
    summary: dict[str, Any] = {
        "ingest_vs_duckdb": ours["vs_duckdb"],
        "ingest_vs_duckdb_best": ours["vs_duckdb_best"],
        "targets": {"ingest_vs_duckdb": 0.9, "round_duckdb_share": 0.01},
        "met": {"ingest_vs_duckdb": ours["vs_duckdb"] >= 0.9},
    }
    if not args.no_round:
        round_ = bench_round(args.config, args.overrides)
        stage_rows = [{"stage": s, "seconds": v} for s, v in round_["stage_seconds"].items()]
        stage_rows += [
            {"stage": "round (wall)", "seconds": round_["round_seconds"]},
            {"stage": "in DuckDB", "seconds": round_["duckdb_seconds"]},
        ]
        print_table(stage_rows, title=f"one round: DuckDB share {100 * round_['duckdb_share']:.2f}%")
        summary["round"] = round_
        summary["met"]["round_duckdb_share"] = round_["duckdb_share"] < 0.01
    params = {
        "rows": args.rows,
        "repeats": args.repeats,
        "round": not args.no_round,
        "overrides": args.overrides,
    }
    write_results("store", params, rows, summary, args.out)


if __name__ == "__main__":
    main()
