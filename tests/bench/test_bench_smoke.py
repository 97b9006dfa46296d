"""Benches at a tiny size, run as a user types them, writing the JSON every bench writes: the store's ingest, the
scale steps, and one chaos trial (slow: a 2-round game, killed and resumed). The others load larger models or
compare timings: they are run by hand, not as unit tests."""

from __future__ import annotations

import json

import pytest

from bench.common import RESULT_KEYS
from tests.conftest import run_cli


def test_store_bench_writes_the_common_json(tmp_path):
    proc = run_cli(
        "bench.store", "--no-round", "--rows", "400", "--repeats", "1", "--out", str(tmp_path), timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "store ingest" in proc.stdout  # the table is printed

    files = list(tmp_path.glob("store-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert tuple(result) == RESULT_KEYS
    assert result["bench"] == "store"
    assert result["params"]["rows"] == 400 and result["params"]["round"] is False
    assert {"platform", "python", "cpu", "packages"} <= set(result["machine"])
    assert "duckdb" in result["machine"]["packages"]
    methods = [r["method"] for r in result["rows"]]
    assert methods == ["duckdb INSERT…SELECT", "ours: store.insert", "ours: records→arrow→insert"]
    for row in result["rows"]:
        assert row["rows"] == 400 and row["seconds"] > 0 and row["rows_per_s"] > 0
    assert result["rows"][0]["vs_duckdb"] == 1.0
    assert result["summary"]["ingest_vs_duckdb"] == result["rows"][1]["vs_duckdb"]
    assert set(result["summary"]["met"]) == {"ingest_vs_duckdb"}


def test_scale_bench_runs_every_step_on_a_small_store(tmp_path):
    proc = run_cli("bench.scale", "--sizes", "300", "--rounds", "2", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "scale-cpu.json").read_text())
    assert tuple(result) == RESULT_KEYS and result["bench"] == "scale"
    steps = [
        "attack dedup",
        "select",
        "attacker reward",
        "datasets",
        "push --to-dir",
        "data.check",
        "data.report",
    ]
    assert [r["step"] for r in result["rows"]] == steps
    for row in result["rows"]:
        assert row["error"] is None and row["seconds"] > 0 and 0 < row["peak_gib"] < 4
    assert result["summary"]["all_met"] is True


@pytest.mark.slow
def test_chaos_bench_kills_resumes_and_compares(tmp_path, tiny_models):
    """One trial of `bench.chaos`: the game is killed once, resumed, and its store compared with the reference."""
    out = tmp_path / "out"
    proc = run_cli(
        "bench.chaos", "--trials", "1", "--seed", "3", "--work", str(tmp_path / "work"), "--out", str(out),
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "chaos-cpu.json").read_text())
    assert tuple(result) == RESULT_KEYS and result["bench"] == "chaos"
    (row,) = result["rows"]
    assert row["resume_exit"] == 0 and row["orphans"] == 0 and row["equal"], row
    assert result["summary"]["stores_equal"] == 1 and result["summary"]["orphans_left"] == 0
