"""A command that fails writes nothing (issue 15, item 5): a new run dir stays absent, no empty store is left to
fix players or config for the retry."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO, TINY_DIR, run_cli


def test_a_failed_preflight_on_a_new_run_dir_leaves_nothing(tmp_path):
    run_dir = tmp_path / "new" / "run"
    sets = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", f"run.dir={run_dir}",
            "--set", f"run.tiny_models_dir={TINY_DIR}", "--set", "defender.model=/no/such/model"]  # fmt: skip
    result = run_cli("generate.round", "--round", "1", *sets)
    assert result.returncode != 0 and "defender model '/no/such/model' does not exist" in result.stderr
    assert not (tmp_path / "new").exists()


def test_training_a_round_that_was_never_played_leaves_nothing(tmp_path):
    run_dir = tmp_path / "run"
    for module in ("train.defender", "train.attacker"):
        result = run_cli(module, "--round", "1", "--config", str(REPO / "configs" / "demo.yaml"),
                         "--set", f"run.dir={run_dir}")  # fmt: skip
        assert result.returncode != 0 and "has no select stage" in result.stderr
        assert not run_dir.exists()


def test_an_os_error_is_one_line(tmp_path):
    from data.store import Store
    from tests.data.storefill import fill_round

    with Store.for_run(tmp_path / "run") as store:
        fill_round(store, 1, {"a": [0.0, 1.0]})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("data.report", "--run", str(tmp_path / "run"), "--out", str(blocker / "report"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"sparring: error: Not a directory: {blocker / 'report'}; the store is unchanged"
    )


def test_a_report_on_a_truncated_store_is_one_line_and_writes_nothing(tmp_path):
    from data.store import Store
    from tests.data.storefill import fill_round

    run = tmp_path / "run"
    with Store.for_run(run) as store:
        fill_round(store, 1, {"a": [0.0, 1.0]})
    store_file = run / "sparring.duckdb"
    store_file.write_bytes(store_file.read_bytes()[:20_000])
    result = run_cli("data.report", "--run", str(run), "--out", str(tmp_path / "report"))
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"sparring: error: cannot open run store '{store_file}'")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("command", ["data.report", "data.check"])
def test_a_store_another_process_is_writing_is_one_line(tmp_path, command):
    """DuckDB lets one process write and none read meanwhile: a read-only command on a store held by a running
    stage (here: this test, holding it open for writing) names the holder in one line and writes nothing."""
    from data.store import Store
    from tests.data.storefill import fill_round

    run = tmp_path / "run"
    with Store.for_run(run) as store:
        fill_round(store, 1, {"a": [0.0, 1.0]})
        before = store.rows("SELECT * FROM scores ORDER BY response_id")
        out = ["--out", str(tmp_path / "report")] if command == "data.report" else []
        result = run_cli(command, "--run", str(run), *out)
        assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("sparring: error: ") and "Traceback" not in result.stderr
        assert f"PID {os.getpid()}" in result.stderr or str(os.getpid()) in result.stderr
        assert not (tmp_path / "report").exists()
        assert store.rows("SELECT * FROM scores ORDER BY response_id") == before
