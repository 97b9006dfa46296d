"""The run store: atomic stages, forced redo, schema versions, one writer at a time."""

import subprocess
import sys

import pytest

from core.errors import StageError, StoreError
from data import sql
from data.records import PromptRecord, to_arrow
from data.store import Store
from tests.conftest import REPO
from tests.data.storefill import fill_round


def test_a_failing_stage_writes_nothing(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        rows = to_arrow([PromptRecord("p1", 1, 0, "hello there", "c", None, "gpo")], PromptRecord)
        with pytest.raises(RuntimeError), store.stage(1, "attack"):
            store.insert("prompts", rows)
            raise RuntimeError("killed mid-stage")
        assert store.count("prompts", 1) == 0 and not store.stage_done(1, "attack")
        with store.stage(1, "attack") as result:
            result.rows = store.insert("prompts", rows)
        assert store.count("prompts", 1) == 1 and store.stage_done(1, "attack")


def test_reset_from_undoes_that_stage_and_later_ones_only(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        fill_round(store, 1, {"a": [0.0, 1.0]})
        fill_round(store, 2, {"b": [0.0, 1.0]})
        assert store.reset_from(1, "respond")[:4] == ["respond", "score", "resample", "select"]
        assert (
            store.count("prompts", 1) == 1
            and store.count("responses", 1) == 0
            and store.count("scores", 1) == 0
        )
        assert store.done_stages(1) == {"attack"}
        assert store.count("responses", 2) == 2  # other rounds untouched


def test_unknown_stage_is_a_clear_error(tmp_path):
    with Store(tmp_path / "s.duckdb") as store, pytest.raises(StageError, match="unknown stage 'bogus'"):
        store.reset_from(1, "bogus")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.execute(sql.SET_META, ["schema_version", str(sql.SCHEMA_VERSION + 1)])
    with pytest.raises(StoreError, match=f"schema version {sql.SCHEMA_VERSION + 1}, newer than"):
        Store(path)


def test_second_writer_gets_a_clear_error_naming_the_holder(tmp_path):
    path = tmp_path / "s.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from data.store import Store; s = Store({str(path)!r}); print('ready', flush=True); input()",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=rf"open for writing by process {holder.pid}"):
            Store(path)
    finally:
        holder.communicate("\n", timeout=30)


def test_read_only_run_dir_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if (ro / "probe").exists() or _can_write(ro):
            pytest.skip("running as a user that ignores directory permissions")
        with pytest.raises(StoreError, match="cannot open run store"):
            Store(ro / "s.duckdb")
    finally:
        ro.chmod(0o700)


def _can_write(d):
    try:
        (d / "probe").write_text("x")
        (d / "probe").unlink()
        return True
    except OSError:
        return False
